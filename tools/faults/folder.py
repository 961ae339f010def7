"""A queue folder as the scenarios see it: its entries by state, sound files, the items it holds,
batches written on purpose in any state, and a snapshot of every entry."""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import sqlite3
import stat
import tempfile
import time
import uuid
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from turbo_queue import Dequeuer, _folder, _batchfile
from turbo_queue._codecs import get_codec
from turbo_queue.monitor import read_items

from .tally import Result

JOURNAL_SUFFIXES = ("-journal", "-wal", "-shm")


def groups(folder: str) -> Dict[str, List[str]]:
    """The folder's entries by protocol state, plus hidden creating files, journals and others."""
    found: Dict[str, List[str]] = {k: [] for k in ("loading", "ready", "chosen", "bad", "creating", "journal", "other")}
    for name in sorted(os.listdir(folder)):
        parsed = _folder.parse_name(name)
        if parsed is not None:
            found[parsed.state].append(name)
        elif name.startswith(_folder.CREATING):
            found["creating"].append(name)
        elif name.endswith(JOURNAL_SUFFIXES):
            found["journal"].append(name)
        else:
            found["other"].append(name)
    return found


def integrity(path: str) -> List[str]:
    """PRAGMA integrity_check of a file, read-only: ``["ok"]`` when sound (SQLite's error if it cannot read it)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as exc:
        return [f"{type(exc).__name__}: {exc}"]
    finally:
        conn.close()


def check_files(folder: str, result: Result, context: str, allowed: Sequence[str] = ("ready",),
                foreign: Iterable[str] = ()) -> Dict[str, List[str]]:
    """After recover() with no live process: only ``allowed`` kinds remain, every batch file sound."""
    found = groups(folder)
    foreign = set(foreign)
    for kind, names in found.items():
        names = [n for n in names if n not in foreign]
        if kind not in allowed and names:
            result.fail(f"{context}: {kind} entries remain after recover(): {names[:4]}")
    for name in found["ready"] + found["loading"] + found["chosen"]:
        if name in foreign or not os.path.isfile(os.path.join(folder, name)):
            continue
        check = integrity(os.path.join(folder, name))
        if check != ["ok"]:
            result.integrity_failures += 1
            result.fail(f"{context}: {name} fails PRAGMA integrity_check: {check[:3]}")
    result.bad_files += len([n for n in found["bad"] if n not in foreign])
    return found


def read_batch(path: str, limit: int = 10**9) -> Tuple[dict, List[object]]:
    """A batch file's meta table and up to ``limit`` of its unacknowledged items, read without a
    lock (as the monitor reads): the one place the scenarios read a batch file that way."""
    return read_items(path, limit)


def folder_items(folder: str, names: Optional[List[str]] = None) -> List[object]:
    """Every item the ready_ files would still deliver, read without claiming them."""
    items: List[object] = []
    for name in groups(folder)["ready"] if names is None else names:
        _, found = read_batch(os.path.join(folder, name))
        items.extend(found)
    return items


def set_aside_items(folder: str) -> List[object]:
    """The items consumers set aside in bad_ files (poison items and their chunks), in no order."""
    items: List[object] = []
    for name in groups(folder)["bad"]:
        meta, found = read_batch(os.path.join(folder, name))
        if "set_aside_from" in meta:
            items.extend(found)
    return items


def drain(folder: str, timeout: Optional[float] = None, **settings: object) -> List[object]:
    """Everything a fresh consumer gets now (nothing else runs), or, with ``timeout``, until
    nothing more came for that many seconds (other consumers share the folder)."""
    out: List[object] = []
    with Dequeuer(folder, recover_every=3600, **settings) as consumer:
        while True:
            try:
                out.extend(consumer.get_many(10_000, block=timeout is not None, timeout=timeout))
            except queue.Empty:
                return out


def fresh_folder(root: str) -> str:
    path = tempfile.mkdtemp(prefix="q-", dir=root)
    return path


def remove_tree(path: str) -> None:
    """Remove a run's folder, whatever modes its entries were given."""
    def onerror(func, target, _exc):
        try:
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
        except OSError:
            pass
        try:
            func(target)
        except OSError:
            pass
    shutil.rmtree(path, onerror=onerror)


def digest(path: str) -> str:
    """A hash of the file's bytes."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def snapshot(folder: str, names: Optional[Iterable[str]] = None) -> Dict[str, tuple]:
    """Everything observable about the folder's entries (all, or ``names``): kind, inode, mode, size,
    times and a hash of the bytes of a file, the target of a link, the entries of a folder. Two
    snapshots are equal only if nothing renamed, wrote, truncated or changed the mode of an entry."""
    state: Dict[str, tuple] = {}
    for name in sorted(os.listdir(folder)) if names is None else names:
        path = os.path.join(folder, name)
        info = os.lstat(path)
        if stat.S_ISREG(info.st_mode):
            state[name] = ("file", info.st_ino, info.st_mode, info.st_size, info.st_mtime_ns, info.st_ctime_ns,
                           digest(path))
        elif stat.S_ISLNK(info.st_mode):
            state[name] = ("link", os.readlink(path))
        elif stat.S_ISDIR(info.st_mode):
            state[name] = ("dir", info.st_ino, info.st_mode, tuple(sorted(os.listdir(path))))
        else:
            state[name] = ("other", info.st_ino, info.st_mode)
    return state


def write_items(folder: str, items: Sequence[object], state: str, *, acked: int = 0, chunk: int = 100,
                epoch: Optional[int] = None) -> str:
    """A committed batch of ``items`` (pickled) left in ``state`` with its lock dropped, as a process
    that died after its last commit leaves it; its file name. ``epoch``, if given, is the time in its name."""
    codec = get_codec("pickle")
    batch = _folder.create(folder)
    writer = _batchfile.BatchWriter(batch.path, codec)
    for start in range(0, len(items), chunk):
        part = items[start:start + chunk]
        writer.append(len(part), codec.encode_many(part))
    writer.finish()
    if acked:
        set_meta(batch.path, "acked", acked)
    if epoch is not None:
        older = batch.name._replace(epoch=epoch)
        os.rename(batch.path, os.path.join(folder, older.filename))
        batch.name = older
    if state != _folder.LOADING:
        batch.move(state)
    batch.unlock()
    return batch.name.filename


def write_batch(folder: str, ids: List[int], state: str, acked: int = 0, chunk: int = 100,
                epoch: Optional[int] = None) -> str:
    """write_items() of one ``{"id": i}`` item per id."""
    return write_items(folder, [{"id": i} for i in ids], state, acked=acked, chunk=chunk, epoch=epoch)


def set_meta(path: str, key: str, value: object) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
    finally:
        conn.close()


def raw_meta(path: str) -> Dict[str, object]:
    """A batch file's meta table, read-only, whatever its version."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT key, value FROM meta").fetchall())
    finally:
        conn.close()


def batch_name(state: str, epoch: Optional[int] = None) -> str:
    return f"{state}_{int(time.time()) if epoch is None else epoch}_{uuid.uuid4()}.db"
