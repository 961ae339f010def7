"""One batch file: a SQLite database with an ``items`` table of chunks and a ``meta`` table.

Format 1::

    meta(key TEXT PRIMARY KEY, value)   format=1, codec, count, acked, created_by
    items(first INTEGER PRIMARY KEY, n INTEGER, data BLOB)

A row is a chunk of ``n`` items encoded together by the codec; ``first`` is the position of its
first item in the batch, so a position (``acked``: how many items were acknowledged) names an item
inside a chunk.
"""

from __future__ import annotations

import ctypes
import os
import socket
import sqlite3
import urllib.parse
from typing import Dict, List, NamedTuple, Optional, Tuple

from ._codecs import Codec, get_codec
from ._errors import ShardFormatError

FORMAT_VERSION = 1

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
    "CREATE TABLE items (first INTEGER PRIMARY KEY, n INTEGER NOT NULL, data BLOB NOT NULL)",
)


def _connect(path: str, durable: bool) -> sqlite3.Connection:
    # Autocommit mode: this module says BEGIN and COMMIT itself. Rollback journal (DELETE mode):
    # it survives kill -9 (R3) and leaves no file beside the database once closed (R1).
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=OFF")
    conn.execute("PRAGMA journal_mode=DELETE")
    return conn


def _never_close(conn: sqlite3.Connection) -> sqlite3.Connection:
    """Make a connection that a forked child inherited impossible to close, even at exit.

    Closing it, also when the interpreter frees it at exit, rolls back the open transaction of the
    parent in the parent's file and deletes the parent's journal: the parent's batch is then lost
    ("disk I/O error" at its commit). An extra reference that is never dropped keeps it from ever
    being freed; the process's exit just closes the descriptors, which touches no file.
    """
    try:
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(conn))
    except AttributeError:  # not CPython: keeping the reference (lifecycle does) is all we can do
        pass
    return conn


def created_by() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class ShardWriter:
    """Fills a new batch file. Everything is one transaction, committed by ``finish``."""

    def __init__(
        self, path: str, codec: Codec, durable: bool = False, meta: Optional[Dict[str, object]] = None
    ) -> None:
        """``meta``: more entries for the meta table (or other starting values, e.g. ``acked``)."""
        self.count = 0
        self._conn = _connect(path, durable)
        try:
            self._conn.execute("BEGIN")
            for statement in _SCHEMA:
                self._conn.execute(statement)
            entries = {"format": FORMAT_VERSION, "codec": codec.name, "count": 0, "acked": 0,
                       "created_by": created_by(), **(meta or {})}
            self._conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", list(entries.items()))
        except BaseException:
            self.abandon()
            raise

    def append(self, n: int, data: bytes) -> None:
        """Add a chunk of ``n`` encoded items."""
        self._conn.execute("INSERT INTO items (first, n, data) VALUES (?, ?, ?)", (self.count, n, data))
        self.count += n

    def finish(self) -> None:
        """Record the count, commit and close: the file is then at rest, with no journal beside it."""
        self._conn.execute("UPDATE meta SET value = ? WHERE key = 'count'", (self.count,))
        self._conn.execute("COMMIT")
        self._conn.close()

    def abandon(self) -> None:
        """Roll back and close; used when a write failed."""
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the connection is closed next either way; SQLite rolls back on close
        self._conn.close()

    def forget(self) -> sqlite3.Connection:
        """Give up the connection without touching the file (a forked child must not close it)."""
        return _never_close(self._conn)


class Chunk(NamedTuple):
    first: int
    n: int
    data: bytes


class ShardReader:
    """Reads a batch file that this process holds, and records the acknowledged position."""

    def __init__(self, path: str, durable: bool = False) -> None:
        self.path = path
        self._conn = _connect(path, durable)
        try:
            meta = read_meta(self._conn, path)
            self.codec: Codec = get_codec(meta["codec"])
            self.count = int(meta["count"])
            self.acked = int(meta["acked"])
            # The count decides when the file is deleted, so check it against the chunks (a cheap
            # look-up of the last row): a damaged count must not delete items that were never read.
            last = self._conn.execute("SELECT first + n FROM items ORDER BY first DESC LIMIT 1").fetchone()
            end = last[0] if last else 0
            if end != self.count or not 0 <= self.acked <= self.count:
                raise sqlite3.DatabaseError(
                    f"{path}: its meta table says {self.count} items ({self.acked} acknowledged), "
                    f"its chunks end at item {end}"
                )
        except BaseException:
            self._conn.close()
            raise

    def chunk_at(self, position: int) -> Optional[Chunk]:
        """The chunk that holds item ``position`` (None past the end)."""
        row = self._conn.execute(
            "SELECT first, n, data FROM items WHERE first <= ? ORDER BY first DESC LIMIT 1", (position,)
        ).fetchone()
        if row is None:
            return None
        first, n, data = row
        if type(n) is not int or type(data) is not bytes or n < 1:  # a damaged file can read back NULLs
            raise sqlite3.DatabaseError(f"{self.path}: the chunk of item {first} is malformed "
                                        f"(n={n!r}, data of type {type(data).__name__})")
        if first + n <= position:
            return None
        return Chunk(first, n, data)

    def save_acked(self, position: int) -> None:
        """Record that the first ``position`` items were acknowledged."""
        self._conn.execute("UPDATE meta SET value = ? WHERE key = 'acked'", (position,))
        self.acked = position

    def close(self) -> None:
        self._conn.close()

    def forget(self) -> sqlite3.Connection:
        return _never_close(self._conn)


def read_meta(conn: sqlite3.Connection, path: str) -> Dict[str, object]:
    """The meta table as a dict; ShardFormatError for a version this code does not know."""
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    version = meta.get("format")
    if version != FORMAT_VERSION:
        raise ShardFormatError(path, version)
    for key in ("codec", "count", "acked"):
        if key not in meta:
            raise sqlite3.DatabaseError(f"{path}: meta table has no {key!r}")
    return meta


class Inspection(NamedTuple):
    """What recovery learned of a file: ``state`` is 'ok', 'empty', 'corrupt' or 'newer'."""

    state: str
    count: int = 0
    acked: int = 0
    detail: str = ""


def inspect(path: str) -> Inspection:
    """Open an orphaned file in place (SQLite rolls back a hot journal), check it, close it.

    The file must be held by the caller. Afterwards no journal is left beside it.
    """
    try:
        conn = _connect(path, durable=False)
    except sqlite3.Error as exc:
        return Inspection("corrupt", detail=str(exc))
    try:
        check = conn.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            return Inspection("corrupt", detail="; ".join(str(row[0]) for row in check[:3]))
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return Inspection("empty")
        if "meta" in tables:  # the version first: a newer format may lay its tables out otherwise
            version = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if version is not None and version[0] != FORMAT_VERSION:
                return Inspection("newer", detail=str(ShardFormatError(path, version[0])))
        if not {"meta", "items"} <= tables:
            return Inspection("corrupt", detail=f"not a turbo_queue batch (tables: {sorted(tables)})")
        meta = read_meta(conn, path)
        get_codec(meta["codec"])
        (count,) = conn.execute("SELECT coalesce(max(first + n), 0) FROM items").fetchone()
        acked = int(meta["acked"])
        return Inspection("ok" if count > acked else "empty", count, acked)
    except (sqlite3.Error, ValueError, TypeError) as exc:
        return Inspection("corrupt", detail=str(exc))
    finally:
        conn.close()


def has_journal(path: str) -> bool:
    """Whether a -journal, -wal or -shm file sits beside ``path`` (R1: never rename it then)."""
    return any(os.path.lexists(path + suffix) for suffix in ("-journal", "-wal", "-shm"))


def peek(path: str, limit: int) -> Tuple[Dict[str, object], List[object]]:
    """Meta and the first ``limit`` unacknowledged items of a batch, read-only."""
    # immutable: take no lock, so a consumer recording its position is never kept waiting
    conn = sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro&immutable=1", uri=True, isolation_level=None)
    try:
        meta = read_meta(conn, path)
        codec = get_codec(meta["codec"])
        position = int(meta["acked"])
        items: List[object] = []
        for first, n, data in conn.execute("SELECT first, n, data FROM items WHERE first + n > ? ORDER BY first", (position,)):
            chunk = codec.decode(data)
            items.extend(chunk[max(0, position - first):])
            if len(items) >= limit:
                break
        return meta, items[:limit]
    finally:
        conn.close()


