"""Salvage: every intact chunk of a damaged batch file, written into a new ``ready_`` batch.

SQLite gives up on a file it calls malformed (a page missing from a truncated file, a flipped bit
in a page it needs) at the first damaged page it meets, though most chunks sit whole in pages it
never reached. So besides asking SQLite (from both ends of the table, with ``writable_schema`` so
that it reads a truncated file at all), this module reads the file's pages itself (SQLite's file
format, https://www.sqlite.org/fileformat2.html): every table b-tree leaf page, each cell with
its overflow chain, each record decoded into the row it holds. A row of the ``items`` table is
recognised by its shape, ``(NULL, n, crc, data)`` (``first`` is the rowid), and kept only if its
bytes still match its CRC-32; a ``parts`` row (format 3) by ``(first, seq, data)``. The ``meta``
table (a WITHOUT ROWID table: an index b-tree) is read from index leaf pages the same way when
SQLite cannot read it.

The damaged file is only read (a read-only, ``immutable`` connection and ``open(..., "rb")``), never
changed; the new batch is written as every batch is (``loading_``, one transaction, renamed
``ready_``), so it appears whole or not at all.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

from . import _folder
from ._batchfile import BatchWriter, Chunk, connect_read_only
from ._codecs import CODECS, Codec, get_codec

#: Table and index b-tree leaf pages (the only pages that hold rows).
_TABLE_LEAF, _INDEX_LEAF = 13, 10


@dataclass
class Salvage:
    """What could be read of a damaged batch file."""

    path: str
    meta: Dict[str, Any]
    #: The intact chunks, by position, not overlapping (their bytes match their CRC-32).
    chunks: List[Chunk]
    #: How many of them SQLite itself returned (the rest came from reading the pages).
    by_sqlite: int
    #: What went wrong, for a person: SQLite's errors, chunks found damaged.
    problems: List[str] = field(default_factory=list)

    @property
    def codec(self) -> Optional[str]:
        value = self.meta.get("codec")
        return value if isinstance(value, str) else None

    @property
    def acked(self) -> int:
        value = self.meta.get("acked")
        return value if type(value) is int and value >= 0 else 0

    @property
    def end(self) -> int:
        """Where the batch's items end: its meta's count, else the end of the last chunk found."""
        count = self.meta.get("count")
        last = self.chunks[-1].first + self.chunks[-1].n if self.chunks else 0
        return count if type(count) is int and count >= last else last

    def missing(self) -> List[Tuple[int, int]]:
        """(first, last) of each run of unacknowledged items that no intact chunk holds."""
        runs: List[Tuple[int, int]] = []
        position = self.acked
        for chunk in self.chunks:
            if chunk.first > position:
                runs.append((position, chunk.first - 1))
            position = max(position, chunk.first + chunk.n)
        if self.end > position:
            runs.append((position, self.end - 1))
        return runs

    def unacknowledged(self) -> Tuple[List[Chunk], int]:
        """The chunks holding unacknowledged items, and how many items of the first are acknowledged."""
        kept = [chunk for chunk in self.chunks if chunk.first + chunk.n > self.acked]
        skip = max(0, self.acked - kept[0].first) if kept else 0
        return kept, skip


def read(path: str) -> Salvage:
    """Every intact chunk of the batch file at ``path``, read without changing it.

    OSError if the file cannot be read at all (missing, permission denied).
    """
    with open(path, "rb") as f:
        image = f.read()
    problems: List[str] = []
    meta, rows, parts = _read_with_sqlite(path, problems)
    by_sqlite = set(rows)
    page_meta, page_rows, page_parts = _read_pages(image)
    for key, value in page_meta.items():
        meta.setdefault(key, value)
    for first, row in page_rows.items():
        rows.setdefault(first, row)
    for part, piece in page_parts.items():
        parts.setdefault(part, piece)
    chunks: List[Chunk] = []
    end = -1
    for first in sorted(rows):
        n, crc, data = rows[first]
        if crc is not None and not data:
            joined = _join(parts, first)
            if joined is None:
                problems.append(f"items {first}..{first + n - 1}: a part of their chunk is missing")
                continue
            data = joined
        if crc is None:  # format 1: no checksum, so the codec must decode exactly n items
            if not _decodes(meta.get("codec"), data, n):
                problems.append(f"items {first}..{first + n - 1}: their chunk (format 1, no checksum) does not decode")
                continue
        elif zlib.crc32(data) != crc:
            problems.append(f"items {first}..{first + n - 1}: their chunk's checksum does not match")
            continue
        if first < end:  # overlaps the chunk before it: not a row of a sound batch
            problems.append(f"items {first}..{first + n - 1}: their chunk overlaps the one before")
            continue
        chunks.append(Chunk(first, n, bytes(data), crc))
        end = first + n
    return Salvage(path, meta, chunks, sum(1 for chunk in chunks if chunk.first in by_sqlite), problems)


def guess_codec(salvage: Salvage) -> Optional[Codec]:
    """The codec recorded in the file, else the first one that decodes its first chunk."""
    if salvage.codec is not None:
        return get_codec(salvage.codec)
    if salvage.chunks:
        chunk = salvage.chunks[0]
        for codec in CODECS.values():
            if _decodes(codec.name, chunk.data, chunk.n):
                return codec
    return None


def write(salvage: Salvage, codec: Codec, folder: str, epoch: Optional[int] = None) -> str:
    """Write the unacknowledged intact chunks into a new ``ready_`` batch of ``folder``; its file name.

    The batch is written as a producer writes one and fsynced (durable): it appears whole or not at
    all, and a failure (``sqlite3.Error``, ``OSError``) leaves nothing behind. ``epoch`` gives it
    its place in line (the damaged file's).
    """
    chunks, skip = salvage.unacknowledged()
    batch = _folder.create(folder, epoch)
    try:
        meta = {"acked": skip, "salvaged_from": os.path.basename(salvage.path)}
        writer = BatchWriter(batch.path, codec, durable=True, meta=meta)
        try:
            for chunk in chunks:
                writer.append(chunk.n, chunk.data, chunk.crc)
            writer.finish()
        except BaseException:
            writer.abandon()
            raise
        batch.move(_folder.READY, durable=True)
    except BaseException:
        try:
            batch.remove()
        except OSError:
            pass  # recovery removes an orphaned loading_ file
        raise
    finally:
        batch.unlock()
    return batch.name.filename


# -- asking SQLite ------------------------------------------------------------------------------


Row = Tuple[int, Optional[int], bytes]  # n, crc (None in format 1), data (empty: in parts)


def _read_with_sqlite(path: str, problems: List[str]) -> Tuple[Dict[str, Any], Dict[int, Row], Dict[Tuple[int, int], bytes]]:
    """What SQLite reads of the file before its first error (the rows in order, then from the end)."""
    meta: Dict[str, Any] = {}
    rows: Dict[int, Row] = {}
    parts: Dict[Tuple[int, int], bytes] = {}
    try:
        conn = connect_read_only(path)
    except sqlite3.Error as exc:
        problems.append(f"SQLite cannot open it ({exc})")
        return meta, rows, parts
    try:
        # SQLite refuses a file shorter than its header says (truncated) unless the schema is
        # "writable": then it reads the pages that are there. A connection setting: on this
        # read-only, immutable connection nothing is written.
        conn.execute("PRAGMA writable_schema=ON")
        try:
            meta.update(conn.execute("SELECT key, value FROM meta"))
        except sqlite3.Error as exc:
            problems.append(f"SQLite cannot read its meta table ({exc})")
        columns = "first, n, NULL, data" if meta.get("format") == 1 else "first, n, crc, data"
        for order in ("ASC", "DESC"):  # from either end: past a damaged page in the middle too
            try:
                for first, n, crc, data in conn.execute(f"SELECT {columns} FROM items ORDER BY first {order}"):
                    if type(first) is int and type(n) is int and n > 0 and type(data) is bytes:
                        rows.setdefault(first, (n, crc if type(crc) is int else None, data))
            except sqlite3.Error as exc:
                if order == "ASC":
                    problems.append(f"SQLite stopped reading its chunks ({exc})")
        try:
            for first, seq, data in conn.execute("SELECT first, seq, data FROM parts"):
                if type(first) is int and type(seq) is int and type(data) is bytes:
                    parts.setdefault((first, seq), data)
        except sqlite3.Error:
            pass  # no parts table (formats 1 and 2), or damaged: the pages say more
    finally:
        conn.close()
    return meta, rows, parts


def _join(parts: Dict[Tuple[int, int], bytes], first: int) -> Optional[bytes]:
    pieces = []
    seq = 0
    while (first, seq) in parts:
        pieces.append(parts[(first, seq)])
        seq += 1
    return b"".join(pieces) if pieces else None  # a missing last part fails the CRC


def _decodes(codec: object, data: bytes, n: int) -> bool:
    try:
        return len(get_codec(str(codec)).decode(data)) == n
    except Exception:  # unpickling runs code from the file: any error means "does not decode"
        return False


# -- reading the pages ----------------------------------------------------------------------------


def _read_pages(image: bytes) -> Tuple[Dict[str, Any], Dict[int, Row], Dict[Tuple[int, int], bytes]]:
    """The meta entries, items rows and parts rows found in the leaf pages of a SQLite file image.

    The page size comes from the header; if the header is damaged, every possible size is tried
    and the one that finds the most rows wins.
    """
    declared = struct.unpack(">H", image[16:18])[0] if len(image) >= 100 else 0
    declared = 65536 if declared == 1 else declared
    sizes = [declared] if declared in _PAGE_SIZES else list(_PAGE_SIZES)
    reserved = image[20] if len(image) >= 100 and declared in _PAGE_SIZES else 0
    best: Tuple[Dict[str, Any], Dict[int, Row], Dict[Tuple[int, int], bytes]] = ({}, {}, {})
    for size in sizes:
        found = _scan(image, size, size - reserved)
        if len(found[1]) + len(found[2]) > len(best[1]) + len(best[2]):
            best = found
    return best


_PAGE_SIZES = tuple(1 << bits for bits in range(9, 17))


def _scan(image: bytes, size: int, usable: int) -> Tuple[Dict[str, Any], Dict[int, Row], Dict[Tuple[int, int], bytes]]:
    meta: Dict[str, Any] = {}
    rows: Dict[int, Row] = {}
    parts: Dict[Tuple[int, int], bytes] = {}
    pages = len(image) // size
    for number in range(1, pages + 1):
        for kind, rowid, record in _cells(image, size, usable, pages, number):
            if kind == _TABLE_LEAF:
                if len(record) == 4 and record[0] is None and _is_int(record[1], record[2]) and type(record[3]) is bytes:
                    if record[1] > 0:
                        rows.setdefault(rowid, (record[1], record[2], record[3]))
                elif len(record) == 3 and record[0] is None and _is_int(record[1]) and type(record[2]) is bytes:
                    if record[1] > 0 and record[2]:
                        rows.setdefault(rowid, (record[1], None, record[2]))  # format 1
                elif len(record) == 3 and _is_int(record[0], record[1]) and type(record[2]) is bytes:
                    parts.setdefault((record[0], record[1]), record[2])
            elif len(record) == 2 and type(record[0]) is str:
                meta.setdefault(record[0], record[1])
    return meta, rows, parts


def _is_int(*values: object) -> bool:
    return all(type(value) is int for value in values)


def _cells(image: bytes, size: int, usable: int, pages: int, number: int) -> Iterator[Tuple[int, int, List[Any]]]:
    """(page type, rowid, record) of each readable cell of leaf page ``number``."""
    start = (number - 1) * size
    header = start + (100 if number == 1 else 0)
    kind = image[header]
    if kind not in (_TABLE_LEAF, _INDEX_LEAF):
        return
    count = struct.unpack_from(">H", image, header + 3)[0]
    pointers = header + 8
    if pointers + 2 * count > start + size:
        return
    for i in range(count):
        offset = struct.unpack_from(">H", image, pointers + 2 * i)[0]
        if not pointers + 2 * count - start <= offset < usable:
            continue
        try:
            cell = start + offset
            payload_size, cell = _varint(image, cell)
            rowid = 0
            if kind == _TABLE_LEAF:
                rowid, cell = _varint(image, cell)
            payload = _payload(image, size, usable, pages, kind, cell, start + usable, payload_size)
            if payload is not None:
                yield kind, rowid, _record(payload)
        except (IndexError, ValueError, struct.error):
            continue  # a damaged cell: the others of the page may be whole


def _payload(image: bytes, size: int, usable: int, pages: int, kind: int, cell: int, page_end: int,
             total: int) -> Optional[bytes]:
    """A cell's payload, its overflow chain followed; None if a page of it is missing or the chain is wrong."""
    most_local = usable - 35 if kind == _TABLE_LEAF else (usable - 12) * 64 // 255 - 23
    least_local = (usable - 12) * 32 // 255 - 23
    if total <= most_local:
        local = total
    else:
        local = least_local + (total - least_local) % (usable - 4)
        if local > most_local:
            local = least_local
    if cell + local > page_end:
        return None
    if local == total:
        return image[cell : cell + total]
    out = bytearray(image[cell : cell + local])
    page = struct.unpack_from(">I", image, cell + local)[0]
    seen = 0
    while len(out) < total:
        seen += 1
        if not 1 <= page <= pages or seen > pages:  # past the end of a truncated file, or a loop
            return None
        at = (page - 1) * size
        page = struct.unpack_from(">I", image, at)[0]
        out += image[at + 4 : at + 4 + min(usable - 4, total - len(out))]
    return bytes(out)


def _varint(data: bytes, at: int) -> Tuple[int, int]:
    value = 0
    for i in range(8):
        byte = data[at + i]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, at + i + 1
    return (value << 8) | data[at + 8], at + 9


_INT_SIZES = {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8}


def _record(payload: bytes) -> List[Any]:
    """The values of a SQLite record; ValueError if it is malformed."""
    header_size, at = _varint(payload, 0)
    if not 0 < header_size <= len(payload):
        raise ValueError("bad record header")
    types = []
    while at < header_size:
        serial, at = _varint(payload, at)
        types.append(serial)
    values: List[Any] = []
    body = header_size
    for serial in types:
        if serial == 0:
            values.append(None)
        elif serial in _INT_SIZES:
            width = _INT_SIZES[serial]
            values.append(int.from_bytes(payload[body : body + width], "big", signed=True))
            body += width
        elif serial == 7:
            values.append(struct.unpack_from(">d", payload, body)[0])
            body += 8
        elif serial in (8, 9):
            values.append(serial - 8)
        elif serial >= 12:
            length = (serial - 12) // 2
            value = payload[body : body + length]
            values.append(bytes(value) if serial % 2 == 0 else value.decode("utf-8", "replace"))
            body += length
        else:
            raise ValueError(f"serial type {serial}")
        if body > len(payload):
            raise ValueError("record runs past its payload")
    return values
