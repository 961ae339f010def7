"""Batches left by turbo-queue 0.5.2 and 0.8.0, converted to the current format so that they drain.

Those versions stored one JSON text per row in a table ``logs(log_data json)``, without a
``meta`` table, and took no flock. 0.5.2 named its files as this protocol does (``loading_``,
``ready_``, ``chosen_``); 0.8.0 named them ``load_``, ``ready_`` and ``unload_``, and both left
``..._recovered.db``, ``..._temp_hold`` and ``chosen_..._<n>`` names behind. Converting writes the
rows into a new batch of the ``json-stdlib`` codec (0.5.2's own JSON) that keeps the old epoch,
so the old backlog keeps its place in line, hands it over, and only then removes the old file: a
crash in between delivers those items twice, never loses them. An old file that fails its check
is quarantined, as any other (R9).
"""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import urllib.parse
import uuid
from typing import Iterator, List, Optional, Tuple

from . import _folder, _platform
from ._codecs import get_codec
from ._batchfile import BatchWriter

#: Names 0.5.2 and 0.8.0 gave files that the current protocol does not use.
OLD_NAME = re.compile(
    r"(load|unload|avail|assigned|loading|chosen|ready)_(\d+)_"
    r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    r"(?:_recovered)?\.db(?:_\d+)?(?:_temp_hold)?"
)
#: The codec whose chunks are JSON arrays that the old rows can be joined into as they are.
CODEC = "json-stdlib"
#: Rows per chunk of the converted batch (the Enqueuer's default chunk size).
_CHUNK = 100


def old_name(filename: str) -> Optional[Tuple[int, str]]:
    """(epoch, uuid) of a file name only the old versions used, or None."""
    if _folder.parse_name(filename) is not None:
        return None
    match = OLD_NAME.fullmatch(filename)
    return None if match is None else (int(match.group(2)), match.group(3))


def is_old_batch(path: str) -> bool:
    """Whether ``path`` holds the old layout: a ``logs`` table and no ``meta`` table."""
    try:
        conn = sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except (sqlite3.Error, UnicodeDecodeError):  # damaged (a damaged schema's message is not UTF-8)
        return False
    finally:
        conn.close()
    return "logs" in tables and "meta" not in tables


def _rows(conn: sqlite3.Connection) -> Iterator[List[bytes]]:
    """The JSON texts of the ``logs`` table in the order they were added, a chunk at a time."""
    cursor = conn.execute("SELECT log_data FROM logs ORDER BY rowid")
    while True:
        rows = cursor.fetchmany(_CHUNK)
        if not rows:
            return
        yield [_as_json(value) for (value,) in rows]


def _as_json(value: object) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    if value is None:
        return b"null"
    return str(value).encode("ascii")  # SQLite gave a number back for a number-looking text


def convert(folder: str, path: str, epoch: int, durable: bool = False) -> Tuple[str, Optional[str]]:
    """Convert the old batch at ``path``, which the caller holds (its flock), and remove it.

    Returns ``("requeued", new name)``, ``("removed", None)`` for a file that held no rows, or
    ``("quarantined", bad_ name)`` for one that failed its check. Raises OSError or sqlite3.Error
    when the new batch cannot be written (a full disk): the old file is then left as it is.
    """
    try:
        # Opened read-write under its current name, so SQLite rolls back a hot journal (R2).
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            check = conn.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                raise sqlite3.DatabaseError("; ".join(str(row[0]) for row in check[:3]))
            new = _write(folder, _rows(conn), epoch, os.path.basename(path), durable)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError) and "no such table" not in str(exc):
            raise  # cannot write the new batch (disk full, say): try again later
        bad = _folder.BatchName(_folder.BAD, epoch, str(uuid.uuid4())).filename
        os.rename(path, os.path.join(folder, bad))
        return "quarantined", bad
    os.unlink(path)
    if durable:
        _platform.fsync_folder(folder)
    return ("removed", None) if new is None else ("requeued", new)


def _write(folder: str, chunks: Iterator[List[bytes]], epoch: int, source: str, durable: bool) -> Optional[str]:
    """Hand the rows over as a new ``ready_`` batch of the old epoch; None if there were none."""
    first = next(chunks, None)
    if first is None:
        return None
    batch = _folder.create(folder, epoch=epoch)
    try:
        writer = BatchWriter(batch.path, get_codec(CODEC), durable, meta={"converted_from": source})
        try:
            for rows in (first, *chunks):
                writer.append(len(rows), b"[" + b",".join(rows) + b"]")
            writer.finish()
        except BaseException:
            writer.abandon()
            raise
        batch.move(_folder.READY, durable)
        return batch.name.filename
    finally:
        batch.unlock()  # after a failure the loading_ file is an orphan: recovery removes it


def convert_unlocked(folder: str, filename: str, durable: bool = False) -> Optional[Tuple[str, Optional[str]]]:
    """Lock and convert a file with an old name; None if another process holds or took it.

    The old versions took no lock, so a free flock says nothing about whether an old process
    still writes the file: stop every 0.5.2 and 0.8.0 process before the new code runs on its
    folder (the README says so).
    """
    parsed = old_name(filename)
    if parsed is None:
        raise ValueError(f"{filename!r} is not a file name of turbo-queue 0.5.2 or 0.8.0")
    path = os.path.join(folder, filename)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None  # gone, or not a file this process may open: not ours to touch
    try:
        info = os.fstat(fd)
        if not _platform.try_lock(fd):
            return None  # another recovery is converting it
        try:
            now = os.lstat(path)
        except FileNotFoundError:
            return None
        if (now.st_ino, now.st_dev) != (info.st_ino, info.st_dev) or not stat.S_ISREG(info.st_mode):
            return None
        return convert(folder, path, parsed[0], durable)
    finally:
        os.close(fd)  # the lock's descriptor last (R4)

