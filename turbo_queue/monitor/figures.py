"""The figures of a queue folder: what one look found (``QueueFigures``), and what a
``QueueTracker`` learns from the folder's events (the ``Flow`` of batches and items)."""

from __future__ import annotations

import collections
import logging
import os
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Deque, Dict, List, Optional, Set, Tuple

from .. import _folder
from .._errors import BatchFormatError
from .connectors import ConnectorStatus, read_connectors
from .holders import holders
from .reading import describe_error, read_counts

log = logging.getLogger("turbo_queue")

#: Rates are averaged over this many seconds.
RATE_WINDOW = 5.0
#: Seconds of per-second history kept for the sparklines.
HISTORY = 600

#: The files whose owners hold their flock.
HELD = (_folder.LOADING, _folder.CHOSEN)
#: What a tracker counts, per second and in total.
_FLOW = ("batches_handed_over", "items_handed_over", "uncounted_handed_over",
         "batches_consumed", "items_consumed", "uncounted_consumed")
_COUNTED = (_folder.READY, _folder.CHOSEN)


@dataclass
class Flow:
    """Batches and items that moved (handed over or consumed) over ``seconds`` seconds.

    ``uncounted`` of the batches were gone before their item count could be read (a consumer
    finished them first), so ``items`` leaves their items out.
    """

    batches: int
    items: int
    seconds: float
    uncounted: int = 0

    @property
    def batches_per_second(self) -> float:
        return self.batches / self.seconds if self.seconds > 0 else 0.0

    @property
    def items_per_second(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> Dict[str, object]:
        return {"batches": self.batches, "items": self.items, "uncounted_batches": self.uncounted,
                "seconds": round(self.seconds, 3),
                "batches_per_second": round(self.batches_per_second, 3),
                "items_per_second": round(self.items_per_second, 3)}


@dataclass
class QueueFigures:
    """What one look at a queue folder found.

    ``live`` maps each ``loading_``/``chosen_`` file held by a live process to its pid (0: the
    kernel did not say which); ``orphaned`` lists those nobody holds (their process died; recovery
    puts them back). Both are None where liveness cannot be told (no ``/proc/locks``).
    ``backlog_items`` counts the unacknowledged items of the ``ready_`` and ``chosen_`` batches
    (a ``loading_`` batch is still being filled and is not opened); ``uncounted_batches`` of them
    could not be read, so the backlog leaves them out. The flows are None unless the folder was
    watched: ``handed_over``/``consumed`` over the last ``RATE_WINDOW`` seconds, the ``*_total``
    ones since watching began, ``*_history`` items per second, one entry a second, oldest first.
    ``connectors`` are the Kafka connectors running on the folder, from their status files
    (``connectors``), and ``connector_problems`` the status files that could not be read; both
    empty unless ``QueueTracker.figures()`` looked (``snapshot`` does not).
    """

    folder: str
    time: float
    exists: bool
    error: Optional[str] = None
    files: Dict[str, int] = field(default_factory=lambda: dict.fromkeys(_folder.STATES, 0))
    live: Optional[Dict[str, int]] = field(default_factory=dict)
    orphaned: Optional[List[str]] = field(default_factory=list)
    backlog_items: int = 0
    uncounted_batches: int = 0
    oldest_ready_epoch: Optional[int] = None
    problems: List[str] = field(default_factory=list)
    names: Optional[List[str]] = None
    handed_over: Optional[Flow] = None
    consumed: Optional[Flow] = None
    handed_over_total: Optional[Flow] = None
    consumed_total: Optional[Flow] = None
    handed_over_history: List[int] = field(default_factory=list)
    consumed_history: List[int] = field(default_factory=list)
    connectors: List[ConnectorStatus] = field(default_factory=list)
    connector_problems: List[str] = field(default_factory=list)

    @property
    def oldest_ready_age(self) -> Optional[float]:
        """Seconds since the oldest ``ready_`` batch was created (the epoch in its name)."""
        if self.oldest_ready_epoch is None:
            return None
        return max(0.0, self.time - self.oldest_ready_epoch)


class _TrackedBatch:
    """What is known of one batch (by uuid): its count never changes once it is handed over."""

    __slots__ = ("count", "acked", "credited", "baseline", "state", "stale", "seen")

    def __init__(self, state: str, seen: float, handed_over: bool = False) -> None:
        self.count: Optional[int] = None
        self.acked = 0
        # Items of it counted as consumed: None until its position is first read, when the items
        # acknowledged before watching began (``baseline``) are taken as done, not as new.
        self.credited: Optional[int] = 0 if handed_over else None
        self.baseline = 0
        self.state = state
        self.stale = False  # handed back: its position must be read again
        self.seen = seen


class QueueTracker:
    """What the monitor knows of one queue folder: cached counts, and the flows seen in its events.

    ``scan()`` looks at the folder; ``on_event()`` takes one filesystem event. Neither is
    thread-safe: the caller serialises them (``Session`` does).
    """

    #: Cache entries of batches no scan has seen for this long are dropped.
    FORGET_AFTER = 60.0

    def __init__(self, folder: str) -> None:
        self.folder = os.path.abspath(folder)
        self.dirty = True
        self.watched_since: Optional[float] = None  # monotonic time watching began
        self._batches: Dict[str, _TrackedBatch] = {}
        self._last: Optional[QueueFigures] = None
        # Per second: [second, *_FLOW], and the totals of _FLOW since watching began.
        self._history: Deque[List[int]] = collections.deque(maxlen=HISTORY)
        self._totals = [0] * len(_FLOW)
        self._reported: Set[str] = set()  # problems already logged

    # -- looking at the folder -----------------------------------------------------------------

    def scan(self, names: bool = False) -> QueueFigures:
        """List the folder and read what changed; the figures without the flows."""
        self.dirty = False
        now = time.time()
        figures = self._last = QueueFigures(self.folder, now, exists=True)
        try:
            with os.scandir(self.folder) as entries:
                found = [entry.name for entry in entries]
        except FileNotFoundError:
            figures.exists, figures.error = False, "no such folder"
            return figures
        except NotADirectoryError:
            figures.error = "not a folder"
            return figures
        except PermissionError:
            figures.error = "permission denied"
            return figures
        if names:
            figures.names = sorted(name for name in found if not name.startswith("."))
        by_state: Dict[str, List[Tuple[str, _folder.BatchName]]] = {state: [] for state in _folder.STATES}
        for name in found:
            parsed = _folder.parse_name(name) if name.endswith(".db") else None
            if parsed is not None:
                by_state[parsed.state].append((name, parsed))
        figures.files = {state: len(by_state[state]) for state in _folder.STATES}
        held = holders(self.folder, [name for state in HELD for name, _ in by_state[state]])
        if held is None:
            figures.live = figures.orphaned = None
        else:
            figures.live = dict(held.live, **dict.fromkeys(held.gone, 0))
            figures.orphaned = held.orphaned
        epochs = [parsed.epoch for _, parsed in by_state[_folder.READY]]
        figures.oldest_ready_epoch = min(epochs) if epochs else None
        clock = time.monotonic()
        for state in _COUNTED:
            for name, parsed in by_state[state]:
                batch = self._batches.get(parsed.uid)
                if batch is None:
                    batch = self._batches[parsed.uid] = _TrackedBatch(state, clock)
                # A ready_ batch is read once; a chosen_ one each time (its consumer moves on), and
                # so is one that came back (a consumer handed it back with a new position).
                if batch.count is None or state == _folder.CHOSEN or batch.state != state or batch.stale:
                    if self._read(name, batch, figures.problems):
                        batch.stale = False
                batch.state, batch.seen = state, clock
                if batch.count is None:
                    figures.uncounted_batches += 1
                else:
                    figures.backlog_items += max(0, batch.count - batch.acked)
        for uid in [uid for uid, batch in self._batches.items() if clock - batch.seen > self.FORGET_AFTER]:
            del self._batches[uid]
        return figures

    def _read(self, name: str, batch: _TrackedBatch, problems: List[str]) -> bool:
        """Read ``name``'s count and position into ``batch``; credit newly acknowledged items."""
        try:
            found = read_counts(os.path.join(self.folder, name))
        except (OSError, sqlite3.Error, BatchFormatError, ValueError, TypeError) as exc:
            problem = f"{name}: {describe_error(exc)}"
            problems.append(problem)
            if problem not in self._reported:
                self._reported.add(problem)
                log.warning("turbo-queue: %s/%s", self.folder, problem)
            return False
        if found is None:
            return False
        self._apply(batch, *found)
        return True

    def _apply(self, batch: _TrackedBatch, count: int, acked: int) -> None:
        batch.count = count
        if batch.credited is None:  # seen for the first time: what was acknowledged before is not ours
            batch.credited = batch.baseline = acked
        elif acked > batch.credited:
            self._add(items_consumed=acked - batch.credited)
            batch.credited = acked
        batch.acked = acked

    def recheck(self) -> Optional[QueueFigures]:
        """On the clock: tell again which known files are held (a process may have died, which
        makes no event in the folder), and notice a folder replaced behind the watch. Does not
        list the folder. None when a full scan is needed instead."""
        last = self._last
        if last is None or self.dirty or not last.exists or last.error:
            return None
        names = list(last.live or ()) + list(last.orphaned or ())
        if names:
            held = holders(self.folder, names)
            if held is not None:
                if held.gone:
                    self.dirty = True  # a file went and no event said so (events were lost): look again
                    return None
                last.live, last.orphaned = held.live, held.orphaned
        last.time = time.time()
        return last

    # -- events --------------------------------------------------------------------------------

    def on_event(self, kind: str, src: str, dest: str, counts: Optional[Tuple[int, int]] = None) -> None:
        """One filesystem event in the folder (``kind`` is watchdog's event type). ``counts``:
        the moved batch's (count, acked), if they were read when the event came."""
        self.dirty = True
        if kind == "moved":
            before, after = _folder.parse_name(src), _folder.parse_name(dest)
            if before is None or after is None or before.uid != after.uid:
                return
            if before.state == _folder.LOADING and after.state == _folder.READY:
                self._handed_over(after, counts)
            elif after.state == _folder.READY:  # a consumer or recovery handed it back
                batch = self._batches.get(after.uid)
                if batch is not None:
                    batch.stale = True  # with a new position, which the next scan reads
            elif after.state == _folder.CHOSEN:  # claimed: make sure its count is known when it is finished
                batch = self._batches.get(after.uid)
                if batch is None:
                    batch = self._batches[after.uid] = _TrackedBatch(_folder.CHOSEN, time.monotonic())
                if batch.count is None and counts is not None:
                    self._apply(batch, *counts)
                elif batch.count is None:
                    self._read(dest, batch, [])
            elif after.state == _folder.BAD:
                self._batches.pop(after.uid, None)
        elif kind == "deleted" and src.endswith("-journal"):
            # A consumer finished writing its position: the moment to read a batch whose count
            # could not be read while the journal was there.
            written = _folder.parse_name(src[: -len("-journal")])
            if written is not None and written.state == _folder.CHOSEN:
                batch = self._batches.get(written.uid)
                if batch is not None and batch.count is None:
                    self._read(written.filename, batch, [])
        elif kind == "deleted":
            gone = _folder.parse_name(src)
            if gone is not None and gone.state == _folder.CHOSEN:
                batch = self._batches.pop(gone.uid, None)
                if batch is not None and batch.count is not None:
                    self._add(batches_consumed=1, items_consumed=max(0, batch.count - (batch.credited or 0)))
                else:
                    self._add(batches_consumed=1, uncounted_consumed=1)

    def _handed_over(self, name: _folder.BatchName, counts: Optional[Tuple[int, int]]) -> None:
        batch = self._batches.get(name.uid)
        if batch is None:
            batch = self._batches[name.uid] = _TrackedBatch(_folder.READY, time.monotonic(), handed_over=True)
        elif batch.baseline:
            # A look at the folder got to it before this event did, and took what its consumer had
            # acknowledged as done before watching: it was not, it is all new.
            self._add(items_consumed=batch.baseline)
            batch.baseline = 0
        if batch.count is None and counts is not None:
            self._apply(batch, *counts)
        if batch.count is None:
            # Read it now, before a consumer finishes it: under its ready_ name or, if claimed
            # meanwhile, its chosen_ one.
            for state in (_folder.READY, _folder.CHOSEN):
                if self._read(name.as_state(state).filename, batch, []):
                    break
        if batch.count is None:
            self._add(batches_handed_over=1, uncounted_handed_over=1)
        else:
            self._add(batches_handed_over=1, items_handed_over=batch.count)

    def _add(self, **counts: int) -> None:
        second = int(time.monotonic())
        if not self._history or self._history[-1][0] != second:
            self._history.append([second] + [0] * len(_FLOW))
        bucket = self._history[-1]
        for key, n in counts.items():
            i = _FLOW.index(key)
            bucket[i + 1] += n
            self._totals[i] += n

    # -- figures with their flows --------------------------------------------------------------

    def figures(self, names: bool = False) -> QueueFigures:
        """The figures, listing the folder again only if something changed since the last look."""
        if self.dirty or self._last is None or (names and self._last.names is None):
            figures = self.scan(names)
        else:
            figures = self._last
            figures.time = time.time()
        if figures.exists and not figures.error:
            # Rewritten every second or so, in a subfolder no event reports: read at each look.
            figures.connector_problems = []
            figures.connectors = read_connectors(self.folder, figures.connector_problems)
        if self.watched_since is not None:
            self._add_flows(figures)
        return figures

    def _add_flows(self, figures: QueueFigures) -> None:
        assert self.watched_since is not None
        clock = time.monotonic()
        watched = max(clock - self.watched_since, 1e-9)
        window = min(RATE_WINDOW, watched)
        recent = [sum(b[i + 1] for b in self._history if b[0] > clock - RATE_WINDOW) for i in range(len(_FLOW))]
        bp, ip, up, bc, ic, uc = recent
        figures.handed_over, figures.consumed = Flow(bp, ip, window, up), Flow(bc, ic, window, uc)
        bp, ip, up, bc, ic, uc = self._totals
        figures.handed_over_total, figures.consumed_total = Flow(bp, ip, watched, up), Flow(bc, ic, watched, uc)
        now_second = int(clock)
        per_second = {b[0]: b for b in self._history}
        span = min(HISTORY, int(watched) + 1)
        seconds = range(now_second - span + 1, now_second + 1)
        items_handed_over, items_consumed = _FLOW.index("items_handed_over") + 1, _FLOW.index("items_consumed") + 1
        figures.handed_over_history = [per_second[s][items_handed_over] if s in per_second else 0 for s in seconds]
        figures.consumed_history = [per_second[s][items_consumed] if s in per_second else 0 for s in seconds]


def snapshot(folder: str, names: bool = False) -> QueueFigures:
    """One look at a queue folder's batches (no flows: those need watching, see ``Session``; no
    connectors: ``QueueTracker(folder).figures()`` reads those too)."""
    return QueueTracker(folder).scan(names)
