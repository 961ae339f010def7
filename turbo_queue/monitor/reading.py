"""The monitor's reading of batch files, without a lock.

The connection is ``_batchfile.open_read_only``: read-only and ``immutable``, so it takes no lock
(a plain read-only one would make a consumer that records its position wait, and fail); the same
one that ``Dequeuer.peek`` reads with. A ``loading_`` file should not be read: its producer is
writing it.
"""

from __future__ import annotations

import sqlite3
from typing import Any, List, Optional, Tuple

from .. import _batchfile
from .._errors import BatchFormatError


def read_meta(path: str) -> _batchfile.Meta:
    """The ``meta`` table of a batch file, read without a lock.

    Raises OSError (missing, unreadable, not a regular file), BatchFormatError (a newer format)
    or sqlite3.DatabaseError (not a batch file).
    """
    conn = _batchfile.open_read_only(path)
    try:
        return _batchfile.read_meta(conn, path)
    finally:
        conn.close()


def read_counts(path: str) -> Optional[Tuple[int, int]]:
    """(count, acked) of a batch file; None when it moved on or is being written (a journal beside
    it: its consumer is recording its position, so read it later). Errors as ``read_meta``."""
    if _batchfile.has_journal(path):
        return None
    try:
        meta = read_meta(path)
    except FileNotFoundError:
        return None
    return int(meta["count"]), int(meta["acked"])


def read_items(path: str, limit: int) -> Tuple[_batchfile.Meta, List[Any]]:
    """Meta and the first ``limit`` unacknowledged items of a batch, without a lock.

    Same errors as ``read_meta``; ``_batchfile.DamagedChunk`` for a chunk whose checksum does not match;
    ValueError or any error of the codec for an undecodable chunk.
    """
    conn = _batchfile.open_read_only(path)
    try:
        return _batchfile.unacknowledged(conn, path, limit)
    finally:
        conn.close()


def describe_error(exc: BaseException) -> str:
    """A short reason for a file that could not be read."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, BatchFormatError):
        return f"batch format version {exc.version!r} is newer than this turbo_queue reads"
    if isinstance(exc, _batchfile.DamagedChunk):
        return str(exc).split(": ", 1)[-1]
    if isinstance(exc, sqlite3.DatabaseError):
        return f"not a turbo_queue batch file ({exc})"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return f"{type(exc).__name__}: {exc}"
