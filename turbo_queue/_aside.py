"""Setting items aside: a ``bad_`` batch of their own, whose meta says why, kept for a person.

A consumer sets aside a chunk it cannot decode (``Dequeuer``); a connector sets aside what it
cannot deliver (``set_aside``). Such a file is a whole batch: renamed ``ready_``, it delivers its
items again.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple, Union

from . import _folder, _platform
from ._codecs import CHUNK_BYTES, Codec, encode_chunks, get_codec
from ._batchfile import BatchWriter

PathLike = Union[str, "os.PathLike[str]"]

#: Items encoded together into one row of a set-aside batch (as the producer's defaults: at most
#: this many, and ``CHUNK_BYTES``).
_CHUNK_SIZE = 100

#: A chunk as written: item count, encoded bytes, and the CRC-32 to keep (None: compute it).
RawChunk = Tuple[int, bytes, Optional[int]]


def write_bad(folder: str, codec: Codec, chunks: Iterable[RawChunk], meta: Dict[str, object],
              durable: bool = False) -> str:
    """Write ``chunks`` into a new batch and rename it ``bad_``; its file name.

    Nothing is half-written on failure: the error (``sqlite3.Error``, ``OSError``) comes out, the
    batch was never renamed ``bad_``, and the ``loading_`` file it leaves (empty, or rolled back)
    is removed by recovery.
    """
    aside = _folder.create(folder)
    try:
        writer = BatchWriter(aside.path, codec, durable, meta=meta)
        try:
            for n, data, crc in chunks:
                writer.append(n, data, crc)
            writer.finish()
        except BaseException:
            writer.abandon()
            raise
        aside.move(_folder.BAD, durable)
    finally:
        aside.unlock()  # on a failure the loading_ file is an orphan: recovery removes or re-queues it
    return aside.name.filename


def set_aside(folder: PathLike, items: Sequence[Any], reason: str, *, codec: str = "pickle",
              durable: bool = False, allow_network_fs: bool = False) -> str:
    """Keep ``items`` in a new ``bad_`` batch of ``folder`` whose meta records ``reason``.

    Returns the file name. For what cannot be delivered and must not be dropped: a person looks at
    it (``turbo-queue peek``), and renaming it ``ready_`` delivers its items again. ``TypeError``
    if ``codec`` cannot take an item (nothing is written then), ``ValueError`` for an unknown codec,
    no items or an empty reason; a failed write (``sqlite3.Error``, ``OSError``) leaves no ``bad_`` file.
    """
    chosen = get_codec(codec)
    items = list(items)
    if not items:
        raise ValueError("set_aside() needs at least one item")
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError(f"set_aside() needs a reason (a non-empty str), got {reason!r}")
    path = os.path.abspath(os.fspath(folder))
    _platform.prepare_folder(path, allow_network_fs)
    _folder.require_writable(path, "set_aside()")
    chunks = [(n, data, None) for n, data in encode_chunks(chosen, items, _CHUNK_SIZE, CHUNK_BYTES)]
    return write_bad(path, chosen, chunks, {"reason": reason}, durable)

