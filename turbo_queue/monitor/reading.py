"""The one lock-free reader of a batch file: opened read-only and ``immutable``, so it takes no lock.

A plain read-only connection takes a shared lock while it reads: a consumer that records its
position at that instant has to wait for it, and fails with "database is locked" once its busy
timeout runs out. ``immutable`` takes no lock at all. A ``loading_`` file should not be read: its
producer is writing it.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
import urllib.parse
from typing import Any, List, Optional, Tuple

from .. import _batchfile
from .._errors import BatchFormatError


def _connect_read_only(path: str) -> sqlite3.Connection:
    """A connection that never writes and never locks (``immutable``); see the module docstring.

    ``immutable`` also means SQLite ignores a journal beside the file, so a read that races a
    consumer's write of its position may see a torn page: callers skip a file with a journal, and
    treat an error as "try again later".
    """
    uri = "file:" + urllib.parse.quote(path) + "?mode=ro&immutable=1"
    return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)


def _require_regular(path: str) -> None:
    """OSError unless ``path`` is a regular file (a FIFO would hang SQLite's open; a symlink is
    never followed, as the protocol says)."""
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a regular file"
        raise OSError(errno.EINVAL, f"{kind}, so not a batch file", path)


def _open_batch(path: str) -> sqlite3.Connection:
    """A lock-free read-only connection to the batch file ``path``.

    Raises FileNotFoundError (also when the file moved on while SQLite opened it),
    PermissionError, OSError (not a regular file) or sqlite3.Error.
    """
    _require_regular(path)
    with open(path, "rb"):  # a clear PermissionError, before SQLite's vaguer "unable to open"
        pass
    try:
        return _connect_read_only(path)
    except sqlite3.Error:
        if not os.path.lexists(path):  # renamed or deleted meanwhile: not a bad file
            raise FileNotFoundError(errno.ENOENT, "moved on while being read", path) from None
        raise


def read_meta(path: str) -> _batchfile.Meta:
    """The ``meta`` table of a batch file, read without a lock.

    Raises OSError (missing, unreadable, not a regular file), BatchFormatError (a newer format)
    or sqlite3.DatabaseError (not a batch file).
    """
    conn = _open_batch(path)
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
    conn = _open_batch(path)
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
