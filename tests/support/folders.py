"""A look at a queue folder: its entries by state, a snapshot of every entry, what it delivers."""

from __future__ import annotations

from typing import Any, Iterator, List

from turbo_queue import Enqueuer
from tools.faults.folder import digest, drain, read_batch, snapshot
from tools.faults.folder import groups as listing

__all__ = ["digest", "drain", "hand_over", "listing", "read_batch", "snapshot", "until_none"]


def hand_over(folder: str, *sizes: int, codec: str = "pickle", start: int = 0) -> List[str]:
    """Hand over one batch of each size (items numbered on from ``start``); their ready_ names."""
    before = set(listing(folder)["ready"])
    with Enqueuer(folder, max_batch_delay=3600, chunk_size=10, codec=codec) as enqueuer:
        for size in sizes:
            enqueuer.put_many(list(range(start, start + size)))
            enqueuer.flush()
            start += size
    return [name for name in listing(folder)["ready"] if name not in before]


def until_none(gen: Iterator[Any]) -> List[Any]:
    """What a legacy ``get()`` generator yields up to its first None (the queue was empty then)."""
    out = []
    while (data := next(gen)) is not None:
        out.append(data)
    return out
