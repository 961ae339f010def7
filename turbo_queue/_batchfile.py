"""One batch file: a SQLite database with an ``items`` table of chunks and a ``meta`` table.

Format 2::

    meta(key TEXT PRIMARY KEY, value)   format=2, codec, count, acked, created_by
                                        [crashes, crashed_at: written by recovery]
    items(first INTEGER PRIMARY KEY, n INTEGER, crc INTEGER, data BLOB)

A row is a chunk of ``n`` items encoded together by the codec; ``first`` is the position of its
first item in the batch, so a position (``acked``: how many items were acknowledged) names an item
inside a chunk. ``crc`` is the CRC-32 of ``data``: a chunk whose bytes changed on disk is never
decoded. Format 1 is format 2 without ``crc``; it is still read.

Format 3 is format 2 plus a table for chunks too large for one SQLite value (SQLite's length
limit, 1,000,000,000 bytes by default)::

    parts(first INTEGER, seq INTEGER, data BLOB, PRIMARY KEY (first, seq))

Such a chunk's ``items`` row has an empty ``data`` (no chunk of any codec is empty) and its bytes
are the ``parts`` rows of its ``first`` in ``seq`` order (0, 1, ...); ``crc`` is of the whole. A
file is written as format 3 only when it holds such a chunk, so that readers of format 2 read
every other file, and refuse these clearly (a version they do not know).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import sqlite3
import stat
import threading
import urllib.parse
import zlib
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Tuple

from ._codecs import Codec, get_codec
from ._errors import BatchFormatError

#: A batch's meta table by key: SQLite values (int, float, str, bytes or None), as stored.
Meta = Dict[str, Any]

#: The newest format written: a batch is format 3 only if it holds a chunk split into parts.
FORMAT_VERSION = 3
UNSPLIT_VERSION = 2
READABLE_VERSIONS = (1, 2, 3)

#: SQLite's length limit (a string, a blob, a row: SQLITE_LIMIT_LENGTH) for the connections this
#: module opens; None keeps SQLite's own. A chunk above it is split into parts. Tests lower it,
#: so that splitting runs with small items.
LENGTH_LIMIT: Optional[int] = None

#: SQLite's default length limit, assumed where Python cannot ask (``getlimit``: Python 3.11+).
_SQLITE_DEFAULT_LIMIT = 1_000_000_000

#: Room left in a row for its other columns and its record header, below the length limit.
_ROW_SPARE = 1024

#: The size of a part of a split chunk (1 MiB parts wrote and read fastest, against 16 and 64 MiB).
_PART = 1 << 20

#: A batch file up to this size is made and read whole, in memory (where sqlite3 can serialize:
#: Python 3.11+). Its producer writes the file's bytes at once at the roll and its consumer reads
#: them at once at the claim: no SQLite connection on the file, no journal, no lock of SQLite's,
#: which cost more than the items of a small batch. A larger batch is written and read in its
#: file, a chunk at a time: memory stays bounded, and the copies that memory costs would take
#: longer than what it saves (default batches of 10,000 small items are about 1.4 MB).
IMAGE_LIMIT = 1 << 20

#: A batch file up to this size is read whole into memory at the claim. A larger one is read in
#: its file: recording the consumer's position (every ``ack_every`` items) is then a commit on the
#: connection already open, where a batch read in memory has to open its file for the first
#: record, which costs more than reading in memory saves (read whole, with a record every 1,000
#: items: 40 KB 40 us in memory, 106 in the file; 250 KB 450 against 391; 800 KB 1,248 against 1,082).
READ_LIMIT = 64 << 10

_CAN_IMAGE = hasattr(sqlite3.Connection, "serialize")
_HEADER = b"SQLite format 3\x00"

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
    "CREATE TABLE items (first INTEGER PRIMARY KEY, n INTEGER NOT NULL, crc INTEGER NOT NULL, data BLOB NOT NULL)",
)
_PARTS_SCHEMA = ("CREATE TABLE parts (first INTEGER NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL, "
                 "PRIMARY KEY (first, seq))")


def _connect(path: str, durable: bool, new: bool = False) -> sqlite3.Connection:
    # Autocommit mode: this module says BEGIN and COMMIT itself. Rollback journal (DELETE mode):
    # it survives kill -9 (R3) and leaves no file beside the database once closed (R1). DELETE
    # is SQLite's default, and only a file in WAL mode keeps another: a ``new`` file, which this
    # process made, needs no statement to say so.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    limit_length(conn)
    try:
        conn.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=OFF")
        if not new:
            conn.execute("PRAGMA journal_mode=DELETE")  # the first statement that reads the schema
    except UnicodeDecodeError as exc:
        conn.close()
        raise damaged_schema(path, exc) from None
    return conn


def damaged_schema(path: str, exc: UnicodeDecodeError) -> sqlite3.DatabaseError:
    """The error for a file whose schema text is damaged: SQLite's message quotes the damaged
    bytes, which Python cannot decode, so it raises UnicodeDecodeError instead of the DatabaseError
    every caller handles as "not a readable batch"."""
    return sqlite3.DatabaseError(f"{path}: malformed database schema (bytes that are not UTF-8: {exc.reason})")


def limit_length(conn: sqlite3.Connection) -> int:
    """Apply ``LENGTH_LIMIT`` to ``conn`` (where Python can); the largest value it then stores."""
    key = getattr(sqlite3, "SQLITE_LIMIT_LENGTH", None)
    if key is None:  # Python before 3.11: SQLite keeps its own limit
        return LENGTH_LIMIT or _SQLITE_DEFAULT_LIMIT
    if LENGTH_LIMIT is not None:
        getattr(conn, "setlimit")(key, LENGTH_LIMIT)
    return int(getattr(conn, "getlimit")(key))


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


def _create_tables(conn: sqlite3.Connection, codec: Codec, meta: Optional[Dict[str, object]] = None) -> None:
    for statement in _SCHEMA:
        conn.execute(statement)
    entries = {"format": UNSPLIT_VERSION, "codec": codec.name, "count": 0, "acked": 0,
               "created_by": created_by(), **(meta or {})}
    conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", list(entries.items()))


def _empty_file(codec: Codec) -> bytes:
    """The bytes of a new batch file of ``codec`` made by this process: its tables and meta, no
    item (Python 3.11+: ``_CAN_IMAGE``). A batch made in memory starts from them.

    Made once per process and codec (``created_by`` names the process); the connection that made
    them is kept for the first batch (``_InMemory``), which saves a process's roll a connection
    and a parse of the schema.
    """
    found = _empty_files.get(codec.name)
    if found is None:
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        try:
            limit_length(conn)
            _create_tables(conn, codec)
            found = bytes(getattr(conn, "serialize")())
        except BaseException:
            conn.close()
            raise
        _empty_files[codec.name] = found
        _keep_spare(_schema_key(found), conn)
    return found


_empty_files: Dict[str, bytes] = {}


class BatchWriter:
    """Fills a new batch. Everything is one transaction, committed by ``finish``."""

    def __init__(
        self, path: str, codec: Codec, durable: bool = False, meta: Optional[Dict[str, object]] = None,
        *, in_memory: bool = False,
    ) -> None:
        """``path``: an empty file. ``meta``: more entries for the meta table (or other starting
        values, e.g. ``acked``).

        ``in_memory`` (without ``meta``): hold the chunks in memory while they fit in
        ``IMAGE_LIMIT``; ``finish`` then returns the file's bytes, for the caller to put in place
        (``Batch.rewrite``). A batch that outgrows it goes on in the file.
        """
        self.count = 0
        self._path, self._codec, self._durable = path, codec, durable
        self._held: Optional[List[Tuple[int, int, int, bytes]]] = None  # (first, n, crc, data) in memory
        self._held_bytes = 0
        self._conn: Optional[sqlite3.Connection] = None
        self._split = False
        if in_memory and not meta and _CAN_IMAGE:
            self._held = []
        else:
            self._open(meta)

    def _open(self, meta: Optional[Dict[str, object]]) -> None:
        conn = self._conn = _connect(self._path, self._durable, new=True)
        self._largest = limit_length(conn) - _ROW_SPARE  # a chunk above this is split into parts
        try:
            conn.execute("BEGIN")
            _create_tables(conn, self._codec, meta)
        except BaseException:
            self.abandon()
            raise

    def append(self, n: int, data: bytes, crc: Optional[int] = None) -> None:
        """Add a chunk of ``n`` encoded items (``crc``: keep the one a damaged chunk was stored with).

        A chunk larger than SQLite stores in one value is split into ``parts`` rows (format 3).
        """
        crc = zlib.crc32(data) if crc is None else crc
        held = self._held
        if held is not None:
            if fits_in_memory(self._held_bytes + len(data)):
                held.append((self.count, n, crc, data))
                self._held_bytes += len(data)
                self.count += n
                return
            self._held = None  # too large for memory: the batch goes on in its file
            self._open(meta=None)
            self._insert(held)
        if len(data) <= self._largest:
            self._insert([(self.count, n, crc, data)])
        else:
            self._append_parts(n, data, crc)
        self.count += n

    def _insert(self, rows: List[Tuple[int, int, int, bytes]]) -> None:
        assert self._conn is not None
        self._conn.executemany("INSERT INTO items (first, n, crc, data) VALUES (?, ?, ?, ?)", rows)

    def _append_parts(self, n: int, data: bytes, crc: int) -> None:
        conn = self._conn
        assert conn is not None
        if not self._split:  # the first split chunk: the file becomes format 3, in the same transaction
            conn.execute(_PARTS_SCHEMA)
            conn.execute("UPDATE meta SET value = ? WHERE key = 'format'", (FORMAT_VERSION,))
            self._split = True
        conn.execute("INSERT INTO items (first, n, crc, data) VALUES (?, ?, ?, ?)", (self.count, n, crc, b""))
        size, view = min(self._largest, _PART), memoryview(data)
        conn.executemany(
            "INSERT INTO parts (first, seq, data) VALUES (?, ?, ?)",
            ((self.count, seq, view[start : start + size]) for seq, start in enumerate(range(0, len(data), size))),
        )

    def finish(self) -> Optional[bytes]:
        """Record the count and commit: the file is then at rest, with no journal beside it.

        A batch held in memory: its file's bytes (the file itself is left as it was); else None.
        """
        if self._held is not None:
            held, self._held = self._held, None
            return _image(self._codec, held, self.count)
        assert self._conn is not None
        self._conn.execute("UPDATE meta SET value = ? WHERE key = 'count'", (self.count,))
        self._conn.execute("COMMIT")
        self._conn.close()
        return None

    def abandon(self) -> None:
        """Roll back and close; used when a write failed."""
        self._held = None
        if self._conn is not None:
            _rollback(self._conn)
            self._conn.close()

    def forget(self) -> Optional[sqlite3.Connection]:
        """Give up the connection without touching the file (a forked child must not close it)."""
        self._held = None
        return None if self._conn is None else _never_close(self._conn)


def fits_in_memory(size: int) -> bool:
    """Whether a chunk of ``size`` bytes can be a batch made whole in memory (``whole_batch``)."""
    return _CAN_IMAGE and size <= min(IMAGE_LIMIT, (LENGTH_LIMIT or _SQLITE_DEFAULT_LIMIT) - _ROW_SPARE)


def whole_batch(codec: Codec, n: int, data: bytes) -> bytes:
    """The bytes of a batch file holding one chunk of ``n`` items (it must ``fit_in_memory``)."""
    return _image(codec, [(0, n, zlib.crc32(data), data)], n)


def _image(codec: Codec, rows: List[Tuple[int, int, int, bytes]], count: int) -> bytes:
    """The bytes of a batch file of ``codec`` holding ``rows`` (``count`` items), made in memory."""
    memory = _InMemory(_empty_file(codec))
    conn = memory.conn
    try:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO items (first, n, crc, data) VALUES (?, ?, ?, ?)", rows)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'count'", (count,))
        conn.execute("COMMIT")
        image = bytes(getattr(conn, "serialize")())
    except BaseException:
        conn.close()
        raise
    memory.give_back()
    return image


class _InMemory:
    """An in-memory database holding a copy of an image, on a connection kept for reuse.

    A new connection parses the schema at its first statement, which costs more than all else
    done with a small batch. ``deserialize`` keeps the connection's parsed schema: SQLite parses
    it again only if the schema cookie changed, so a connection is reused only for an image whose
    schema is the same to the byte (``_schema_key``), and any other image gets a new connection.
    """

    __slots__ = ("conn", "_key")

    def __init__(self, image: bytes) -> None:
        self._key = key = _schema_key(image)
        with _spares_lock:  # the roll timers of several producers in one process share them
            found = next((i for i, (spare_key, _) in enumerate(_spares) if spare_key == key), None)
            spare = None if found is None else _spares.pop(found)[1]
        if spare is not None:
            self.conn = spare
        else:
            self.conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            limit_length(self.conn)
        try:
            getattr(self.conn, "deserialize")(image)
        except BaseException:
            self.conn.close()
            raise

    def give_back(self) -> None:
        """Keep the connection for reuse (a few per process). The database it holds, at most
        ``IMAGE_LIMIT`` bytes, is freed when the next image replaces it: keeping one for images
        above 256 KB too took a producer's roll of 4,500 small items (540 KB) from 1,646-1,673 us
        to 1,534-1,569."""
        _keep_spare(self._key, self.conn)


def _schema_key(image: bytes) -> bytes:
    """What of a SQLite image its parsed schema depends on: page 1 (where ``sqlite_master`` is)
    but for the header fields that change at every write (change counter, page count, free list,
    version-valid-for)."""
    page = int.from_bytes(image[16:18], "big")
    return image[16:24] + image[40:92] + image[100 : 65536 if page == 1 else page]


_spares: List[Tuple[bytes, sqlite3.Connection]] = []


_spares_lock = threading.Lock()


def _keep_spare(key: bytes, conn: sqlite3.Connection) -> None:
    with _spares_lock:
        if len(_spares) < 4:
            _spares.append((key, conn))
            return
    conn.close()


def _forget_after_fork() -> None:
    """A forked child makes its own: the parent's empty files name the parent, and its idle
    in-memory connections are not to be shared (nor the lock, which a parent's thread may hold)."""
    global _spares_lock
    _empty_files.clear()
    _spares.clear()
    _spares_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def read_image(fd: int, path: str) -> Optional[bytes]:
    """The bytes of the batch file open on ``fd``, if it can be read whole in memory; else None.

    It can when it is at most ``READ_LIMIT`` bytes, a SQLite file in rollback-journal mode, and
    no journal lies beside it (SQLite must see a hot journal: only a connection on the file does).
    """
    if not _CAN_IMAGE:
        return None
    size = os.fstat(fd).st_size
    if not 0 < size <= READ_LIMIT:
        return None
    image = os.pread(fd, size, 0)
    if len(image) != size or not image.startswith(_HEADER) or image[18:20] != b"\x01\x01":
        return None  # shorter than it was (truncated meanwhile), not SQLite's, or in WAL mode
    if os.path.lexists(path + "-journal"):
        return None
    return image


class Chunk(NamedTuple):
    first: int
    n: int
    data: bytes
    crc: Optional[int] = None  # None in a format 1 file


class DamagedChunk(sqlite3.DatabaseError):
    """A chunk whose bytes no longer match the CRC-32 it was written with."""

    def __init__(self, path: str, chunk: Chunk) -> None:
        last = chunk.first + chunk.n - 1
        super().__init__(f"{path}: items {chunk.first}..{last} are damaged (their checksum does not match)")
        self.chunk = chunk


def _chunk(conn: sqlite3.Connection, path: str, row: Tuple[Any, ...]) -> Chunk:
    """A row of ``items`` as a Chunk (its parts joined), checked: DamagedChunk or DatabaseError if it is damaged."""
    chunk = Chunk(*row)
    if type(chunk.data) is bytes and not chunk.data and chunk.crc is not None:
        chunk = chunk._replace(data=_join_parts(conn, path, chunk.first))
    if type(chunk.n) is not int or type(chunk.data) is not bytes or chunk.n < 1:  # damage can read back NULLs
        raise sqlite3.DatabaseError(f"{path}: the chunk of item {chunk.first} is malformed "
                                    f"(n={chunk.n!r}, data of type {type(chunk.data).__name__})")
    if chunk.crc is not None and zlib.crc32(chunk.data) != chunk.crc:
        raise DamagedChunk(path, chunk)
    return chunk


def _join_parts(conn: sqlite3.Connection, path: str, first: int) -> bytes:
    """The bytes of the chunk at ``first`` that was split into parts; DatabaseError if they are not all there.

    The chunk is held twice for a moment (its parts, then the joined bytes).
    """
    try:
        rows = conn.execute("SELECT seq, data FROM parts WHERE first = ? ORDER BY seq", (first,)).fetchall()
    except sqlite3.OperationalError as exc:  # no parts table: an empty chunk is damage
        raise sqlite3.DatabaseError(f"{path}: the chunk of item {first} is empty and has no parts ({exc})") from None
    if not rows:
        raise sqlite3.DatabaseError(f"{path}: the chunk of item {first} is empty and has no parts")
    for seq, (number, part) in enumerate(rows):
        if number != seq or type(part) is not bytes:
            raise sqlite3.DatabaseError(f"{path}: part {seq} of the chunk of item {first} is missing or malformed")
    data = b"".join([part for _, part in rows])
    rows.clear()
    return data


def _columns(version: object) -> str:
    return "first, n, data, crc" if version != 1 else "first, n, data"


class BatchReader:
    """Reads a batch file that this process holds, and records the acknowledged position.

    A small file is read whole into memory (``read_image``) and read there. A larger one is read
    in the file, where the reads share one read transaction, ended only to record a position:
    SQLite then takes its lock and checks the file once, not once per chunk (no other connection
    writes a held file). Chunks read in order come from one cursor, which lives on across those
    records: one query per batch, not one per chunk.
    """

    def __init__(self, path: str, durable: bool = False, fd: Optional[int] = None) -> None:
        """``fd``: the descriptor the caller holds the file with; a small file is then read whole
        into memory (``read_image``), and SQLite opens the file only to record a position."""
        self.path = path
        self._durable = durable
        image = None if fd is None else read_image(fd, path)
        self._file: Optional[sqlite3.Connection] = None  # the connection on the file, if one is open
        self._memory: Optional[_InMemory] = None  # or the in-memory copy of a small file
        if image is None:
            self._conn = self._file = _connect(path, durable)
        else:
            self._memory = _InMemory(image)
            self._conn = self._memory.conn
        try:
            if image is None:
                self._conn.execute("BEGIN")
            meta = read_meta(self._conn, path)
            self.codec: Codec = get_codec(meta["codec"])
            self.count = int(meta["count"])
            self.acked = int(meta["acked"])
            self.crashes = int(meta.get("crashes", 0))  # consumers that died holding it (see recovery)
            # Every chunk in order, or (a batch begun anew) those from the chunk holding item ? on:
            # two look-ups of the primary key, no scan, in a statement that SQLite takes longer to prepare.
            columns = _columns(meta["format"])
            self._select_all = f"SELECT {columns} FROM items ORDER BY first"
            self._select = (f"SELECT {columns} FROM items WHERE first >= coalesce("
                            "(SELECT first FROM items WHERE first <= ? ORDER BY first DESC LIMIT 1), 0) ORDER BY first")
            self._rows: Optional[sqlite3.Cursor] = None
            self._rows_at = -1  # the position the next row of _rows starts at
            # The count decides when the file is deleted, so check it against the chunks (a cheap
            # look-up of the last row): a damaged count must not delete items that were never read.
            last = self._conn.execute("SELECT first + n FROM items ORDER BY first DESC LIMIT 1").fetchone()
            end = last[0] if last else 0
            if end != self.count or not 0 <= self.acked <= self.count:
                raise sqlite3.DatabaseError(
                    f"{path}: its meta table says {self.count} items ({self.acked} acknowledged), "
                    f"its chunks end at item {end}"
                )
        except UnicodeDecodeError as exc:  # read in memory: the first statement reads the schema
            self._conn.close()
            raise damaged_schema(path, exc) from None
        except BaseException:
            self._conn.close()
            raise

    def chunk_at(self, position: int) -> Optional[Chunk]:
        """The chunk that holds item ``position`` (None past the end); DamagedChunk if it changed."""
        rows = self._rows
        if rows is None or position != self._rows_at:
            rows = self._rows = (self._conn.execute(self._select, (position,)) if position
                                 else self._conn.execute(self._select_all))
        try:
            row = rows.fetchone()
            chunk = None if row is None else _chunk(self._conn, self.path, row)
        except BaseException as exc:
            # Read again from here next time, not from the chunk after. And close the statement:
            # a traceback kept (by a log handler, say) holds this frame, and an open statement
            # freed after its database was closed or replaced crashes the process.
            self._rows = None
            rows.close()
            if isinstance(exc, DamagedChunk) and not exc.chunk.first <= position < exc.chunk.first + exc.chunk.n:
                # its first or n changed too: going past it would find it again, so the file's
                # chunks cannot be followed (a caller quarantines the batch)
                raise sqlite3.DatabaseError(f"{self.path}: the damaged chunk of items {exc.chunk.first}.."
                                            f"{exc.chunk.first + exc.chunk.n - 1} does not hold item {position}") from None
            raise
        if chunk is None:
            self._rows = None
            return None
        self._rows_at = chunk.first + chunk.n
        return chunk if chunk.first <= position < self._rows_at else None

    def save_acked(self, position: int) -> None:
        """Record that the first ``position`` items were acknowledged (sqlite3.Error if it failed)."""
        if self._memory is not None:  # read in memory: the file is opened to record positions only
            if self._file is None:
                self._file = _connect(self.path, self._durable)
            self._file.execute("UPDATE meta SET value = ? WHERE key = 'acked'", (position,))  # a transaction of its own
            self.acked = position
            return
        conn = self._conn
        try:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'acked'", (position,))
            conn.execute("COMMIT")
            self.acked = position
        except sqlite3.Error:
            self._rows = None  # a rollback may end the cursor too
            _rollback(conn)
            raise
        finally:
            conn.execute("BEGIN")

    def close(self) -> None:
        rows, self._rows = self._rows, None
        if rows is not None:  # a statement still open keeps SQLite from closing the file (R1, R4)
            rows.close()
            del rows
        if self._memory is not None:
            self._memory.give_back()
        if self._file is not None:
            self._file.close()  # which ends the read transaction: nothing to undo

    def forget(self) -> List[sqlite3.Connection]:
        """Give up the connections without closing them (a forked child: another thread of the
        parent may have been using them at the fork)."""
        held = [self._file] if self._file is not None else []
        if self._memory is not None:
            held.append(self._memory.conn)
        return [_never_close(conn) for conn in held]


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # SQLite rolls back when the connection closes, or recovery does with the journal


def is_newer(version: object) -> bool:
    """Whether ``version`` names a format newer than this code reads (left for a newer reader): an
    integer above those it knows. Any other value that is not one of them (none, a text, 0) is damage."""
    return type(version) is int and version > max(READABLE_VERSIONS)


def read_meta(conn: sqlite3.Connection, path: str) -> Meta:
    """The meta table as a dict; BatchFormatError for a version this code does not know."""
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    version = meta.get("format")
    if version not in READABLE_VERSIONS:
        if is_newer(version):
            raise BatchFormatError(path, version)
        raise sqlite3.DatabaseError(f"{path}: its meta table's format is {version!r}, not a version")
    for key in ("codec", "count", "acked"):
        if key not in meta:
            raise sqlite3.DatabaseError(f"{path}: meta table has no {key!r}")
    return meta


@dataclass(frozen=True)
class Inspection:
    """What recovery learned of a file: ``state`` is 'ok', 'empty', 'corrupt', 'newer' or 'old'
    (a batch of turbo-queue 0.5.2 or 0.8.0, see ``_upgrade``)."""

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
            if version is not None and is_newer(version[0]):
                return Inspection("newer", detail=str(BatchFormatError(path, version[0])))
        if "logs" in tables and "meta" not in tables:
            return Inspection("old", detail="a batch of turbo-queue 0.5.2 or 0.8.0")
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


def chunks_from(conn: sqlite3.Connection, path: str, meta: Meta, position: int) -> Iterator[Chunk]:
    """The chunks holding items ``position`` onwards, checked as ``BatchReader.chunk_at`` does."""
    rows = conn.execute(f"SELECT {_columns(meta['format'])} FROM items WHERE first + n > ? ORDER BY first", (position,))
    for row in rows:
        yield _chunk(conn, path, row)


def unacknowledged(conn: sqlite3.Connection, path: str, limit: int) -> Tuple[Meta, List[Any]]:
    """Meta and the first ``limit`` unacknowledged items of the batch open in ``conn``.

    Errors as ``read_meta`` and ``chunks_from``; any error of the codec for an undecodable chunk.
    """
    meta = read_meta(conn, path)
    codec = get_codec(str(meta["codec"]))
    position = int(meta["acked"])
    items: List[Any] = []
    chunks = chunks_from(conn, path, meta, position)
    while len(items) < limit:
        chunk = next(chunks, None)
        if chunk is None:
            break
        items.extend(codec.decode(chunk.data)[max(0, position - chunk.first):])
    return meta, items[:limit]


def record_crash(path: str, durable: bool = False) -> int:
    """Count one more consumer that died holding the batch at ``path``; return the count.

    The count is of crashes at the same acknowledged position: a consumer that got further
    before dying starts it again at 1. The caller holds the file, as recovery does.
    """
    conn = _connect(path, durable)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('acked', 'crashes', 'crashed_at')"))
        same = meta.get("crashed_at") == meta["acked"]
        crashes = int(meta.get("crashes", 0)) + 1 if same else 1
        conn.execute("BEGIN")
        conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                         [("crashes", crashes), ("crashed_at", meta["acked"])])
        conn.execute("COMMIT")
        return crashes
    finally:
        conn.close()


# -- reading without a lock (the monitor, turbo-queue peek, Dequeuer.peek) ---------------------------


def connect_read_only(path: str) -> sqlite3.Connection:
    """A connection that never writes and never locks (``immutable``).

    A plain read-only connection takes a shared lock while it reads: a consumer that records its
    position at that instant has to wait for it, and fails with "database is locked" once its busy
    timeout runs out. ``immutable`` also means SQLite ignores a journal beside the file, so a read
    that races a consumer's write of its position may see a torn page: callers skip a file with a
    journal, and treat an error as "try again later". A ``loading_`` file should not be read: its
    producer is writing it.
    """
    uri = "file:" + urllib.parse.quote(path) + "?mode=ro&immutable=1"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    limit_length(conn)
    return conn


def _require_regular(path: str) -> None:
    """OSError unless ``path`` is a regular file (a FIFO would hang SQLite's open; a symlink is
    never followed, as the protocol says)."""
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a regular file"
        raise OSError(errno.EINVAL, f"{kind}, so not a batch file", path)


def open_read_only(path: str) -> sqlite3.Connection:
    """A lock-free read-only connection to the batch file ``path`` (``connect_read_only``).

    Raises FileNotFoundError (also when the file moved on while SQLite opened it),
    PermissionError, OSError (not a regular file) or sqlite3.Error.
    """
    _require_regular(path)
    with open(path, "rb"):  # a clear PermissionError, before SQLite's vaguer "unable to open"
        pass
    try:
        return connect_read_only(path)
    except sqlite3.Error:
        if not os.path.lexists(path):  # renamed or deleted meanwhile: not a bad file
            raise FileNotFoundError(errno.ENOENT, "moved on while being read", path) from None
        raise
