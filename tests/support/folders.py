"""A look at a queue folder: its entries by state, a snapshot of every entry, what it delivers."""

from __future__ import annotations

from typing import List, Tuple

from turbo_queue import Enqueuer, _shard
from tools.faults.folder import digest, drain, snapshot
from tools.faults.folder import groups as listing

__all__ = ["digest", "drain", "listing", "publish", "read_batch", "snapshot"]


def read_batch(path: str, limit: int = 10**9) -> Tuple[dict, List[object]]:
    """A batch file's meta table and up to ``limit`` of its unacknowledged items, read without a
    lock (as the monitor reads): the one place the tests read a batch file that way."""
    return _shard.peek(path, limit)


def publish(folder: str, *sizes: int, codec: str = "pickle", start: int = 0) -> List[str]:
    """Hand over one batch of each size (items numbered on from ``start``); their ready_ names."""
    before = set(listing(folder)["ready"])
    with Enqueuer(folder, max_batch_delay=3600, chunk_size=10, codec=codec) as enqueuer:
        for size in sizes:
            enqueuer.put_many(list(range(start, start + size)))
            enqueuer.flush()
            start += size
    return [name for name in listing(folder)["ready"] if name not in before]
