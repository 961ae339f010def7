"""Status files: what each running connector tells the monitor, without the monitor disturbing it.

Each connector rewrites ``<folder>/.connectors/<kind>-<pid>.json`` about once a second (a hidden
temporary file, then a rename: a reader never sees half a file) and removes it on a clean stop.
A reader skips, and removes, the files of processes that are gone. Needs no Kafka client.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, List

#: The folder's subfolder that holds the status files (hidden: it is no batch).
STATUS_DIR = ".connectors"
KINDS = ("source", "sink")


def status_path(folder: str, kind: str, pid: "int | None" = None) -> str:
    """Where the connector ``kind`` of process ``pid`` (default: this one) keeps its status."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return os.path.join(folder, STATUS_DIR, f"{kind}-{os.getpid() if pid is None else pid}.json")


def write_status(folder: str, kind: str, doc: Dict[str, Any]) -> str:
    """Replace this process's status file of ``kind`` with ``doc`` (JSON) atomically; returns its path."""
    path = status_path(folder, kind)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(doc, out, separators=(",", ":"))
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass  # the rename happened, or the file was never made
        raise
    return path


def remove_status(folder: str, kind: str) -> None:
    """Remove this process's status file of ``kind`` (a clean stop); nothing if there is none."""
    try:
        os.unlink(status_path(folder, kind))
    except FileNotFoundError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def read_statuses(folder: str) -> List[Dict[str, Any]]:
    """The status documents of the folder's live connectors, each with ``kind`` and ``pid`` added.

    Files of dead processes are removed (or skipped when that is not allowed); an unreadable or
    half-replaced file is skipped. An empty list when there is no status folder.
    """
    directory = os.path.join(folder, STATUS_DIR)
    try:
        names = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found: List[Dict[str, Any]] = []
    for name in names:
        kind, _, rest = name.partition("-")
        pid_text = rest[: -len(".json")] if rest.endswith(".json") else ""
        if kind not in KINDS or not pid_text.isdigit():
            continue  # a temporary file, or something else
        pid = int(pid_text)
        path = os.path.join(directory, name)
        if not _alive(pid):
            try:
                os.unlink(path)
            except OSError:
                pass  # gone already, or not ours to remove: skipped either way
            continue
        try:
            with open(path) as source:
                doc = json.load(source)
        except (OSError, ValueError):
            continue  # removed meanwhile, or not a status document
        if isinstance(doc, dict):
            doc.update(kind=kind, pid=pid)
            found.append(doc)
    return found
