"""Status files: what each running connector tells the monitor, without the monitor disturbing it.

Each connector rewrites ``<folder>/.connectors/<kind>-<pid>.json`` about once a second (a hidden
temporary file, then a rename: a reader never sees half a file) and removes it on a clean stop.
The layout is in ``turbo_queue._status``; the monitor reads the files (``turbo_queue.monitor.connectors``).
Needs no Kafka client.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any, Dict, List

from .._status import KINDS, STATUS_DIR, status_dir, status_name

__all__ = ["KINDS", "STATUS_DIR", "read_statuses", "remove_status", "status_path", "write_status"]


def status_path(folder: str, kind: str, pid: "int | None" = None) -> str:
    """Where the connector ``kind`` of process ``pid`` (default: this one) keeps its status."""
    return os.path.join(status_dir(folder), status_name(kind, os.getpid() if pid is None else pid))


def write_status(folder: str, kind: str, doc: Dict[str, Any]) -> str:
    """Replace this process's status file of ``kind`` with ``doc`` (JSON) atomically; returns its path.

    The file gets the permissions the umask gives a new file, as the folder's batches do, so
    that whoever may read the queue may read its status. The first write also removes the files
    that connectors which are gone left behind (killed: no clean stop removed them).
    """
    path = status_path(folder, kind)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    first = not os.path.exists(path)
    temp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w") as out:
            json.dump(doc, out, separators=(",", ":"))
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass  # the rename happened, or the file was never made
        raise
    if first:
        read_statuses(folder)
    return path


def remove_status(folder: str, kind: str) -> None:
    """Remove this process's status file of ``kind`` (a clean stop); nothing if there is none."""
    try:
        os.unlink(status_path(folder, kind))
    except FileNotFoundError:
        pass


def read_statuses(folder: str) -> List[Dict[str, Any]]:
    """The status documents of the folder's live connectors, each with ``kind`` and ``pid`` added.

    Files of dead processes are removed (or skipped when that is not allowed); an unreadable or
    half-replaced file is skipped. An empty list when there is no status folder.
    """
    from ..monitor.connectors import read_documents  # the monitor's reader; imported when needed

    return read_documents(folder, remove_dead=True)
