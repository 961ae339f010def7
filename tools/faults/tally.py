"""What a scenario found, and the one count of lost, duplicated and unexpected items."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Collection, Hashable, Iterable, List, Optional


@dataclass
class Result:
    """What one scenario did and found. ``ok``: nothing lost, every file sound, every check held."""

    scenario: str
    runs: int = 0
    items: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    bad_files: int = 0
    integrity_failures: int = 0
    failure_count: int = 0
    failures: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    seed: int = 0
    seconds: float = 0.0
    unavailable: str = ""

    @property
    def ok(self) -> bool:
        return not self.unavailable and self.lost == 0 and self.integrity_failures == 0 and self.failure_count == 0

    def fail(self, message: str) -> None:
        self.failure_count += 1
        if len(self.failures) < 30:
            self.failures.append(message)

    def as_dict(self) -> dict:
        return {key: getattr(self, key) for key in (
            "scenario", "runs", "items", "lost", "duplicated", "unexpected", "bad_files", "integrity_failures",
            "failure_count", "failures", "notes", "seed", "seconds", "unavailable")} | {"ok": self.ok}


def record(result: Result, context: str, *, items: int = 0, lost: int = 0, duplicated: int = 0, unexpected: int = 0,
           duplicates_allowed: Optional[int] = 0, examples: Iterable[Hashable] = ()) -> None:
    """Add one run's counts to ``result``, and a failure for what was lost, what no one put, and
    duplicates beyond ``duplicates_allowed`` (None: any number, counted only). ``examples``: some
    of the lost items, for the message."""
    result.items += items
    result.lost += lost
    result.duplicated += duplicated
    result.unexpected += unexpected
    if lost:
        shown = sorted(examples, key=repr)[:5]
        result.fail(f"{context}: {lost} of {items} items lost" + (f" (e.g. {shown})" if shown else ""))
    if unexpected:
        result.fail(f"{context}: {unexpected} items delivered that were never put")
    if duplicates_allowed is not None and duplicated > duplicates_allowed:
        result.fail(f"{context}: {duplicated} deliveries of an item already delivered (allowed {duplicates_allowed})")


def tally(result: Result, context: str, expected: Iterable[Hashable], delivered: Iterable[Hashable], *,
          kept: Collection[Hashable] = (), possible: Collection[Hashable] = (), items: Optional[int] = None,
          duplicates_allowed: Optional[int] = 0) -> "collections.Counter[Hashable]":
    """Count one run: each of ``expected`` must be delivered (in ``delivered``, every delivery of
    the run) or ``kept`` (left in the queue, set aside); the ``possible`` ones may come as well.
    Adds to ``result`` (see :func:`record`); ``items`` counts the run's items (default: the
    expected ones). Returns how often each item was delivered."""
    wanted = set(expected)
    counts = collections.Counter(delivered)
    lost = wanted - set(counts) - set(kept)
    duplicated = sum(count - 1 for count in counts.values())
    unexpected = set(counts) - wanted - set(possible)
    record(result, context, items=len(wanted) if items is None else items, lost=len(lost), duplicated=duplicated,
           unexpected=len(unexpected), duplicates_allowed=duplicates_allowed, examples=lost)
    return counts
