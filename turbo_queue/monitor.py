"""Seeing a queue without disturbing it: the figures behind ``turbo-queue monitor``, ``stats``,
``exporter`` and ``peek``.

Everything here only reads a queue folder. It takes no lock on a batch file and renames nothing:

- Which ``loading_``/``chosen_`` files belong to live processes comes from ``/proc/locks``, the
  kernel's table of locks, matched with the files' inodes. No flock is probed (a probe takes the
  lock for an instant, and a producer or consumer could lose its file to it).
- A batch's item count and acknowledged position come from its ``meta`` table, read by SQLite in
  ``immutable`` mode, which takes no lock at all. A plain read-only connection takes a shared
  lock while it reads: a consumer that records its position at that instant has to wait for it,
  and fails with "database is locked" once its busy timeout runs out. A ``loading_`` file is
  never opened: its producer is writing it.
- Rates come from filesystem events (watchdog): a ``loading_`` -> ``ready_`` rename is a batch
  published, a ``chosen_`` file deleted is a batch consumed. The folder is listed again only
  when an event says it changed, at most a few times a second.

Only ``cli.py`` imports this module.
"""

from __future__ import annotations

import argparse
import collections
import errno
import http.server
import json
import logging
import math
import os
import select
import shutil
import signal
import socket
import sqlite3
import stat
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import IO, Any, Deque, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from . import _folder, _shard
from ._errors import ShardFormatError

log = logging.getLogger("turbo_queue")

#: Version of the ``stats --json`` document (README, "Watching a queue"). Bump it on any change
#: that could break a reader; adding a key is not such a change.
JSON_SCHEMA = 1
#: The live view redraws at most this often (seconds), and only when the picture changed.
REDRAW_EVERY = 0.25
#: Clock-driven figures (ages, rates falling to zero, processes that died) are refreshed this often.
TICK = 1.0
#: Rates are averaged over this many seconds.
RATE_WINDOW = 5.0
#: Seconds of per-second history kept for the sparklines.
HISTORY = 600
#: Exit codes of the commands (README, "Watching a queue").
EXIT_OK, EXIT_BAD_DATA, EXIT_USAGE, EXIT_PERMISSION, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES_HELP = """exit codes:
  0    done (also: q pressed in the live view, SIGTERM)
  1    a file is not a readable batch (exporter: the address cannot be used)
  2    bad arguments, or a folder or file that does not exist
  3    permission denied
  130  interrupted (Ctrl-C)
"""

_HELD = (_folder.LOADING, _folder.CHOSEN)
#: What a tracker counts, per second and in total.
_FLOW = ("batches_published", "items_published", "uncounted_published",
         "batches_consumed", "items_consumed", "uncounted_consumed")
_COUNTED = (_folder.READY, _folder.CHOSEN)


# -- reading one batch file ----------------------------------------------------------------------


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


def read_meta(path: str) -> Dict[str, object]:
    """The ``meta`` table of a batch file, read without a lock.

    Raises OSError (missing, unreadable, not a regular file), ShardFormatError (a newer format)
    or sqlite3.DatabaseError (not a batch file).
    """
    conn = _open_batch(path)
    try:
        return _shard.read_meta(conn, path)
    finally:
        conn.close()


def read_counts(path: str) -> Optional[Tuple[int, int]]:
    """(count, acked) of a batch file; None when it moved on or is being written (a journal beside
    it: its consumer is recording its position, so read it later). Errors as ``read_meta``."""
    if _shard.has_journal(path):
        return None
    try:
        meta = read_meta(path)
    except FileNotFoundError:
        return None
    return int(meta["count"]), int(meta["acked"])  # type: ignore[call-overload]


def read_items(path: str, limit: int) -> Tuple[Dict[str, object], List[object]]:
    """Meta and the first ``limit`` unacknowledged items of a batch, without a lock.

    Same errors as ``read_meta``; ``_shard.DamagedChunk`` for a chunk whose checksum does not match;
    ValueError or any error of the codec for an undecodable chunk.
    """
    conn = _open_batch(path)
    try:
        return _shard.unacknowledged(conn, path, limit)
    finally:
        conn.close()


# -- which files live processes hold ---------------------------------------------------------------


def parse_locks(text: str) -> Dict[Tuple[int, int, int], int]:
    """``(major, minor, inode) -> pid`` for every flock held in ``/proc/locks`` text.

    A line reads ``1: FLOCK  ADVISORY  WRITE 4242 fe:00:9977884 0 EOF``; the device numbers are
    hex. Waiters (``1: -> FLOCK ...``) hold nothing and are skipped.
    """
    held: Dict[Tuple[int, int, int], int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        try:
            major, minor, inode = fields[5].split(":")
            held[(int(major, 16), int(minor, 16), int(inode))] = int(fields[4])
        except ValueError:
            continue
    return held


def read_locks() -> Optional[Dict[Tuple[int, int, int], int]]:
    """The flocks held on this machine now, or None where ``/proc/locks`` cannot be read."""
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            return parse_locks(f.read())
    except OSError:
        return None


def _lock_key(info: os.stat_result) -> Tuple[int, int, int]:
    return os.major(info.st_dev), os.minor(info.st_dev), info.st_ino


class Holders(NamedTuple):
    """Who holds the ``loading_``/``chosen_`` files of a folder (see ``holders``)."""

    live: Dict[str, int]  # name -> pid of the process holding its flock (0: the kernel did not say)
    orphaned: List[str]  # nobody holds them: their process died
    gone: List[str]  # renamed or deleted since the listing: their owner moved on (so it was alive)


def holders(folder: str, names: Iterable[str]) -> Optional[Holders]:
    """Which of ``names`` (``loading_``/``chosen_`` files of ``folder``) live processes hold.

    None where this system has no ``/proc/locks``. An owner holds its file's flock for as long
    as the file has a ``loading_``/``chosen_`` name, but the lock table and the folder cannot be
    read at one instant. So a file found unlocked is looked at again: it is an orphan only if the
    lock table read *after* the first look still shows no lock and the file is unchanged (same
    inode, ctime and size: no rename, no write) since.
    """
    first = read_locks()
    if first is None:
        return None
    found = Holders({}, [], [])
    suspects: Dict[str, os.stat_result] = {}
    for name in names:
        try:
            info = os.lstat(os.path.join(folder, name))
        except FileNotFoundError:
            found.gone.append(name)
            continue
        pid = first.get(_lock_key(info))
        if pid is None:
            suspects[name] = info
        else:
            found.live[name] = pid
    if suspects:
        second = read_locks() or {}
        for name, before in suspects.items():
            try:
                now = os.lstat(os.path.join(folder, name))
            except FileNotFoundError:
                found.gone.append(name)
                continue
            pid = second.get(_lock_key(now))
            if pid is not None:
                found.live[name] = pid
            elif (now.st_ino, now.st_ctime_ns, now.st_size) == (before.st_ino, before.st_ctime_ns, before.st_size):
                found.orphaned.append(name)
            else:
                found.live[name] = 0  # it changed between the looks: somebody is working on it
    found.orphaned.sort()
    return found


# -- the figures -------------------------------------------------------------------------------


@dataclass
class Flow:
    """Batches and items that moved (published or consumed) over ``seconds`` seconds.

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
    watched: ``published``/``consumed`` over the last ``RATE_WINDOW`` seconds, the ``*_total``
    ones since watching began, ``*_history`` items per second, one entry a second, oldest first.
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
    published: Optional[Flow] = None
    consumed: Optional[Flow] = None
    published_total: Optional[Flow] = None
    consumed_total: Optional[Flow] = None
    published_history: List[int] = field(default_factory=list)
    consumed_history: List[int] = field(default_factory=list)

    @property
    def oldest_ready_age(self) -> Optional[float]:
        """Seconds since the oldest ``ready_`` batch was created (the epoch in its name)."""
        if self.oldest_ready_epoch is None:
            return None
        return max(0.0, self.time - self.oldest_ready_epoch)


class _Batch:
    """What is known of one batch (by uuid): its count never changes once it is handed over."""

    __slots__ = ("count", "acked", "credited", "baseline", "state", "stale", "seen")

    def __init__(self, state: str, seen: float, published: bool = False) -> None:
        self.count: Optional[int] = None
        self.acked = 0
        # Items of it counted as consumed: None until its position is first read, when the items
        # acknowledged before watching began (``baseline``) are taken as done, not as new.
        self.credited: Optional[int] = 0 if published else None
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
        self._batches: Dict[str, _Batch] = {}
        self._last: Optional[QueueFigures] = None
        # Per second: [second, *_FLOW], and the totals of _FLOW since watching began.
        self._history: Deque[List[int]] = collections.deque(maxlen=HISTORY)
        self._totals = [0] * len(_FLOW)
        self._reported: set = set()  # problems already logged

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
        held = holders(self.folder, [name for state in _HELD for name, _ in by_state[state]])
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
                    batch = self._batches[parsed.uid] = _Batch(state, clock)
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

    def _read(self, name: str, batch: _Batch, problems: List[str]) -> bool:
        """Read ``name``'s count and position into ``batch``; credit newly acknowledged items."""
        try:
            found = read_counts(os.path.join(self.folder, name))
        except (OSError, sqlite3.Error, ShardFormatError, ValueError, TypeError) as exc:
            problem = f"{name}: {_describe(exc)}"
            problems.append(problem)
            if problem not in self._reported:
                self._reported.add(problem)
                log.warning("turbo-queue: %s/%s", self.folder, problem)
            return False
        if found is None:
            return False
        self._apply(batch, *found)
        return True

    def _apply(self, batch: _Batch, count: int, acked: int) -> None:
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
                self._published(after, counts)
            elif after.state == _folder.READY:  # a consumer or recovery handed it back
                batch = self._batches.get(after.uid)
                if batch is not None:
                    batch.stale = True  # with a new position, which the next scan reads
            elif after.state == _folder.CHOSEN:  # claimed: make sure its count is known when it is finished
                batch = self._batches.get(after.uid)
                if batch is None:
                    batch = self._batches[after.uid] = _Batch(_folder.CHOSEN, time.monotonic())
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

    def _published(self, name: _folder.BatchName, counts: Optional[Tuple[int, int]]) -> None:
        batch = self._batches.get(name.uid)
        if batch is None:
            batch = self._batches[name.uid] = _Batch(_folder.READY, time.monotonic(), published=True)
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
            self._add(batches_published=1, uncounted_published=1)
        else:
            self._add(batches_published=1, items_published=batch.count)

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
        figures.published, figures.consumed = Flow(bp, ip, window, up), Flow(bc, ic, window, uc)
        bp, ip, up, bc, ic, uc = self._totals
        figures.published_total, figures.consumed_total = Flow(bp, ip, watched, up), Flow(bc, ic, watched, uc)
        now_second = int(clock)
        per_second = {b[0]: b for b in self._history}
        span = min(HISTORY, int(watched) + 1)
        seconds = range(now_second - span + 1, now_second + 1)
        items_published, items_consumed = _FLOW.index("items_published") + 1, _FLOW.index("items_consumed") + 1
        figures.published_history = [per_second[s][items_published] if s in per_second else 0 for s in seconds]
        figures.consumed_history = [per_second[s][items_consumed] if s in per_second else 0 for s in seconds]


def _describe(exc: BaseException) -> str:
    """A short reason for a file that could not be read."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, ShardFormatError):
        return f"batch format version {exc.version!r} is newer than this turbo_queue reads"
    if isinstance(exc, _shard.DamagedChunk):
        return str(exc).split(": ", 1)[-1]
    if isinstance(exc, sqlite3.DatabaseError):
        return f"not a turbo_queue batch file ({exc})"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return f"{type(exc).__name__}: {exc}"


def snapshot(folder: str, names: bool = False) -> QueueFigures:
    """One look at a queue folder (no flows: those need watching; see ``Session``)."""
    return QueueTracker(folder).scan(names)


# -- watching ------------------------------------------------------------------------------------


class Session:
    """Watches queue folders with one watchdog observer and feeds their events to the trackers.

    The observer's thread queues events (reading the count of a batch being handed over or
    claimed on the way, before a consumer can finish it) and wakes the owner of the session,
    which calls ``process()``: all the bookkeeping runs in one thread at a time (under ``lock``). A folder that
    does not exist (yet, or any more) is waited for by watching its nearest existing parent.
    Where the system refuses a watch (inotify limits), the folder is listed on the clock instead.
    """

    def __init__(self, folders: Sequence[str]) -> None:
        self.trackers = [QueueTracker(folder) for folder in folders]
        self.lock = threading.RLock()
        self.polling: List[str] = []  # folders watched by listing them on the clock
        self._events: Deque[Tuple[QueueTracker, str, str, str, Optional[Tuple[int, int]]]] = collections.deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._signalled = False
        self._observer: Any = None
        self._watches: Dict[str, Tuple[Any, str, Tuple[int, int]]] = {}  # folder -> (watch, path, identity)

    @property
    def signal_fd(self) -> int:
        """The end of the wake-up pipe for ``signal.set_wakeup_fd``: a signal wakes ``wait()``."""
        return self._wake_w

    def start(self) -> None:
        from watchdog.observers import Observer  # watchdog is needed only when watching

        self._observer = Observer()
        self._observer.daemon = True
        self._observer.start()
        started = time.monotonic()
        with self.lock:
            for tracker in self.trackers:
                tracker.watched_since = started
                self._arm(tracker)

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            # Stopping, watchdog's emitter logs "queue_events() called when the thread is
            # inactive" (its own race with its reading thread): not news for a person.
            quiet = logging.getLogger("watchdog.observers.inotify")
            before, quiet.disabled = quiet.disabled, True
            try:
                observer.stop()
                observer.join(timeout=5)
            finally:
                quiet.disabled = before
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> "Session":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- the observer's side -----------------------------------------------------------------

    def post(self, tracker: QueueTracker, kind: str, src: str, dest: str,
             counts: Optional[Tuple[int, int]] = None) -> None:
        """Called in the observer's thread: queue the event and wake the owner (once)."""
        self._events.append((tracker, kind, src, dest, counts))
        if not self._signalled:
            self._signalled = True
            try:
                os.write(self._wake_w, b".")
            except (BlockingIOError, OSError):
                pass  # the pipe is full or closed: the owner is awake or gone anyway

    # -- the owner's side --------------------------------------------------------------------

    def process(self) -> int:
        """Hand the queued events to their trackers; how many there were."""
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        self._signalled = False
        done = 0
        with self.lock:
            while self._events:
                tracker, kind, src, dest, counts = self._events.popleft()
                done += 1
                if kind == "rearm":
                    self._arm(tracker)
                else:
                    tracker.on_event(kind, src, dest, counts)
        return done

    def wait(self, timeout: float, fds: Sequence[int] = (), events: bool = True) -> List[int]:
        """Sleep until one of ``fds`` is readable, ``timeout``, or (with ``events``) an event or a
        signal comes; the readable ``fds``. Without ``events``, events wait in the queue: the
        observer's thread has already read what cannot wait (see ``_Handler``)."""
        watched = [self._wake_r, *fds] if events else list(fds)
        readable, _, _ = select.select(watched, [], [], max(0.0, timeout))
        return [fd for fd in readable if fd != self._wake_r]

    @property
    def dirty(self) -> bool:
        """Whether something changed since the last look (after ``process()``)."""
        return any(tracker.dirty for tracker in self.trackers)

    def tick(self) -> None:
        """On the clock: re-arm watches of folders that appeared or were replaced, poll where
        watching failed, and tell again which files are held."""
        with self.lock:
            for tracker in self.trackers:
                self._arm(tracker)
                if tracker.folder in self.polling:
                    tracker.dirty = True
                else:
                    tracker.recheck()

    def figures(self, names: bool = False) -> List[QueueFigures]:
        """The figures of every folder, with the events that came so far taken into account."""
        with self.lock:
            self.process()
            return [tracker.figures(names) for tracker in self.trackers]

    # -- watches -----------------------------------------------------------------------------

    def _arm(self, tracker: QueueTracker) -> None:
        """Watch the folder if it exists, else its nearest existing parent; re-arm after changes."""
        if self._observer is None:
            return
        folder = tracker.folder
        for _attempt in range(8):  # the folder may appear or go while this runs: look again
            target = folder
            while True:
                try:
                    info = os.stat(target)
                    if stat.S_ISDIR(info.st_mode):
                        break
                except OSError:
                    pass
                parent = os.path.dirname(target)
                if parent == target:
                    return
                target = parent
            identity = (info.st_dev, info.st_ino)
            current = self._watches.get(folder)
            if current is not None and current[1] == target and current[2] == identity:
                return
            if current is not None:
                self._unschedule(current[0])
                del self._watches[folder]
            tracker.dirty = True  # it appeared, went or was replaced: look again
            handler = _Handler(self, tracker, target)
            try:
                watch = self._schedule(handler, target)
            except (FileNotFoundError, NotADirectoryError):
                continue  # it went between the look and the watch: look again
            except OSError as exc:  # inotify's limits, or a folder this user may not read
                if folder not in self.polling:
                    self.polling.append(folder)
                    hint = "" if isinstance(exc, PermissionError) else (
                        " Raise fs.inotify.max_user_instances / max_user_watches to fix this.")
                    log.warning("turbo-queue: cannot watch %s for changes (%s); looking at it every %.0f s "
                                "instead.%s", target, exc.strerror or exc, TICK, hint)
                return
            if folder in self.polling:
                self.polling.remove(folder)
            self._watches[folder] = (watch, target, identity)
            if target == folder or not os.path.isdir(folder):
                return
            # It appeared between the look and the watch: go round again and watch it.

    def _schedule(self, handler: "_Handler", path: str) -> Any:
        from watchdog.events import (
            DirCreatedEvent, DirDeletedEvent, DirMovedEvent, FileCreatedEvent, FileDeletedEvent, FileMovedEvent,
        )

        wanted = [FileCreatedEvent, FileDeletedEvent, FileMovedEvent, DirCreatedEvent, DirDeletedEvent, DirMovedEvent]
        try:
            # Only names coming and going: no event for each write or open (watchdog >= 4).
            return self._observer.schedule(handler, path, recursive=False, event_filter=wanted)
        except TypeError:
            return self._observer.schedule(handler, path, recursive=False)

    def _unschedule(self, watch: Any) -> None:
        try:
            self._observer.unschedule(watch)
        except (KeyError, ValueError):
            pass  # watchdog already dropped it (the watched folder was deleted)


class _Handler:
    """Receives watchdog's events for one watched path (the queue folder or a parent of it)."""

    def __init__(self, session: Session, tracker: QueueTracker, path: str) -> None:
        self.session = session
        self.tracker = tracker
        self.path = path
        self.is_folder = path == tracker.folder

    def dispatch(self, event: Any) -> None:
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(getattr(event, "dest_path", "") or "")
        kind = event.event_type
        if kind not in ("created", "deleted", "moved"):
            return
        if src == self.path:
            self.session.post(self.tracker, "rearm", src, dest)  # the watched folder itself went
        elif not self.is_folder:
            folder = self.tracker.folder
            if any(p and (folder == p or folder.startswith(p.rstrip("/") + "/")) for p in (src, dest)):
                self.session.post(self.tracker, "rearm", src, dest)  # a step on the way to it came or went
        elif event.is_directory:
            return
        else:
            src, dest = os.path.basename(src), os.path.basename(dest)
            counts = None
            if kind == "moved" and src.startswith(("loading_", "ready_")) and dest.startswith(("ready_", "chosen_")):
                # Published or claimed: read its count now, in this thread, before a consumer can
                # finish the batch (the owner of the session may be busy drawing).
                counts = _counts_of_moving(self.path, dest)
            self.session.post(self.tracker, kind, src, dest, counts)


def _counts_of_moving(folder: str, name: str) -> Optional[Tuple[int, int]]:
    """(count, acked) of a batch just handed over or claimed: under ``name``, or its ``chosen_``
    name if a consumer claimed it meanwhile; None if it cannot be read now (it is read later)."""
    names = [name]
    if name.startswith("ready_"):
        names.append("chosen_" + name[len("ready_"):])
    for candidate in names:
        try:
            found = read_counts(os.path.join(folder, candidate))
        except (OSError, sqlite3.Error, ShardFormatError, ValueError, TypeError):
            return None  # reported when the tracker reads it
        if found is not None:
            return found
    return None


# -- text for a person ---------------------------------------------------------------------------

_BLOCKS = "▁▂▃▄▅▆▇█"
_ASCII_BLOCKS = "_.-:=+*#"


def sparkline(values: Sequence[int], blocks: str = _BLOCKS) -> str:
    """One character per value, its height relative to the largest; zero is the lowest block."""
    top = max(values, default=0)
    if top <= 0:
        return blocks[0] * len(values)
    steps = len(blocks) - 1
    return "".join(blocks[0] if v <= 0 else blocks[max(1, math.ceil(v / top * steps))] for v in values)


def ls_columns(names: Sequence[str], width: int) -> List[str]:
    """``names`` laid out in columns, top to bottom, as GNU ``ls -C`` does in ``width`` columns
    (with spaces where ``ls`` would use tabs, i.e. ``ls -C -T 0``)."""
    n = len(names)
    if n == 0:
        return []
    lengths = [len(name) for name in names]
    best_cols, best_widths = 1, [max(lengths)]
    for cols in range(min(n, max(1, width // 3)), 1, -1):
        rows = -(-n // cols)
        widths = [0] * cols
        for i, length in enumerate(lengths):
            col = i // rows
            widths[col] = max(widths[col], length + (0 if col == cols - 1 else 2))
        if sum(widths) < width:
            best_cols, best_widths = cols, widths
            break
    rows = -(-n // best_cols)
    lines = []
    for row in range(rows):
        parts = []
        for col in range(best_cols):
            i = col * rows + row
            if i >= n:
                break
            last = i + rows >= n
            parts.append(names[i] if last else names[i].ljust(best_widths[col]))
        lines.append("".join(parts))
    return lines


def _rate(value: float) -> str:
    if value == 0:
        return "0"
    if value < 10:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min {seconds % 60} s"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def _plural(n: int, word: str, words: str = "") -> str:
    return f"{n:,} " + (word if n == 1 else words or word + "s")


def _pids(pids: Iterable[int]) -> str:
    known = sorted({pid for pid in pids if pid})
    if not known:
        return ""
    shown = ", ".join(str(pid) for pid in known[:6]) + (", …" if len(known) > 6 else "")
    return f" (pid{'s' if len(known) > 1 else ''} {shown})"


def render_queue(figures: QueueFigures, width: int, blocks: str = _BLOCKS,
                 listing: bool = False) -> List[Tuple[str, str]]:
    """The lines that describe one queue, each with a style: '', 'title', 'alert' or 'dim'."""
    lines: List[Tuple[str, str]] = [(figures.folder, "title")]
    if not figures.exists:
        lines.append(("  no such folder (yet): waiting for it to appear", "alert"))
        return lines
    if figures.error:
        lines.append((f"  {figures.error}", "alert"))
        return lines
    files = figures.files
    lines.append((f"  files      loading {files['loading']:,}   ready {files['ready']:,}   "
                  f"chosen {files['chosen']:,}   bad {files['bad']:,}", "alert" if files["bad"] else ""))
    counted = files["ready"] + files["chosen"] - figures.uncounted_batches
    backlog = f"  backlog    {_plural(figures.backlog_items, 'item')} in {_plural(counted, 'batch', 'batches')}"
    if figures.uncounted_batches:
        backlog += f" (+{figures.uncounted_batches:,} unreadable)"
    age = figures.oldest_ready_age
    backlog += "   oldest ready: " + ("none" if age is None else _age(age))
    lines.append((backlog, ""))
    flows = (("published", figures.published, figures.published_total, figures.published_history),
             ("consumed", figures.consumed, figures.consumed_total, figures.consumed_history))
    for label, now, total, history in flows:
        if now is None or total is None:
            lines.append((f"  {label:<9}  not measured (watch the queue: monitor, or --sample SECONDS)", "dim"))
            continue
        rates = f"  {label:<9}  {_rate(now.batches_per_second):>6} batches/s  {_rate(now.items_per_second):>9} items/s"
        totals = f"total {_plural(total.batches, 'batch', 'batches')}, {_plural(total.items, 'item')}"
        if total.uncounted:
            one = total.uncounted == 1
            totals += (f" (+{total.uncounted:,} {'batch' if one else 'batches'} gone before "
                       f"{'it' if one else 'they'} could be counted)")
        # The sparkline takes the room left (one character a second, 10 to 40 of them); on a
        # narrow terminal the totals are cut first.
        room = width - len(rates) - len(totals) - 4
        spark = sparkline(history[-min(40, max(10, room)):], blocks) if width >= 60 else ""
        lines.append((f"{rates}  {spark}  {totals}" if spark else f"{rates}  {totals}", ""))
    if figures.live is None or figures.orphaned is None:
        lines.append(("  processes  unknown here (no /proc/locks)", "dim"))
    else:
        live = figures.live
        producers = [pid for name, pid in live.items() if name.startswith("loading_")]
        consumers = [pid for name, pid in live.items() if name.startswith("chosen_")]
        lines.append((f"  live       {_plural(len(producers), 'loading_ file')}{_pids(producers)}   "
                      f"{_plural(len(consumers), 'chosen_ file')}{_pids(consumers)}", ""))
        if figures.orphaned:
            lines.append((f"  orphaned   {_plural(len(figures.orphaned), 'file')} whose process died, "
                          f"waiting for recovery (turbo-queue recover FOLDER, or any consumer):", "alert"))
            lines.extend((f"    {name}", "alert") for name in figures.orphaned)
        else:
            lines.append(("  orphaned   none", ""))
    for problem in figures.problems[:5]:
        lines.append((f"  unreadable {problem}", "alert"))
    if listing and figures.names is not None:
        lines.append((f"  $ ls -C  ({_plural(len(figures.names), 'file')})", "dim"))
        lines.extend((line, "") for line in ls_columns(figures.names, width))
    return lines


def render(figures: Sequence[QueueFigures], width: int, *, listing: bool = False, blocks: str = _BLOCKS,
           header: str = "") -> List[Tuple[str, str]]:
    """The whole picture: a header line, then each queue, separated by a blank line."""
    lines: List[Tuple[str, str]] = []
    if header:
        lines.append((header, "dim"))
    for i, one in enumerate(figures):
        if i or header:
            lines.append(("", ""))
        lines.extend(render_queue(one, width, blocks, listing))
    return lines


def _blocks_for(stream: IO[str]) -> str:
    try:
        _BLOCKS.encode(stream.encoding or "ascii")
        return _BLOCKS
    except (UnicodeEncodeError, LookupError):
        return _ASCII_BLOCKS


# -- machine-readable output ---------------------------------------------------------------------


def stats_document(figures: Sequence[QueueFigures], sample_seconds: float) -> Dict[str, object]:
    """The ``stats --json`` document (schema ``JSON_SCHEMA``, described in the README)."""
    now = time.time()
    queues = []
    for one in figures:
        age = None if one.oldest_ready_epoch is None else max(0.0, now - one.oldest_ready_epoch)
        queues.append({
            "queue": one.folder,
            "exists": one.exists,
            "error": one.error,
            "files": dict(one.files),
            "backlog_items": one.backlog_items,
            "uncounted_batches": one.uncounted_batches,
            "oldest_ready_age_seconds": None if age is None else round(age, 3),
            "live": None if one.live is None else dict(sorted(one.live.items())),
            "orphaned": one.orphaned,
            "unreadable": list(one.problems),
            "published": None if one.published_total is None else one.published_total.as_dict(),
            "consumed": None if one.consumed_total is None else one.consumed_total.as_dict(),
        })
    return {"schema": JSON_SCHEMA, "time": round(now, 3), "sample_seconds": sample_seconds, "queues": queues}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def prometheus_text(figures: Sequence[QueueFigures], counters: bool = True) -> str:
    """The figures in the Prometheus text exposition format (version 0.0.4).

    Counters (``*_total``) count from when watching began; with ``counters=False`` (a one-off
    look, which watched nothing) they are left out.
    """
    out: List[str] = []

    def family(name: str, kind: str, text: str, samples: Iterable[Tuple[Dict[str, str], float]]) -> None:
        rows = list(samples)
        if not rows:
            return
        out.append(f"# HELP {name} {text}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in rows:
            rendered = ",".join(f'{key}="{_label(val)}"' for key, val in labels.items())
            number = repr(float(value)) if isinstance(value, float) and not value.is_integer() else str(int(value))
            out.append(f"{name}{{{rendered}}} {number}")

    ok = [one for one in figures if one.exists and not one.error]
    family("turbo_queue_folder_exists", "gauge", "1 if the queue folder exists and can be read, else 0.",
           (({"queue": one.folder}, 1 if one in ok else 0) for one in figures))
    family("turbo_queue_files", "gauge", "Batch files in the queue folder, by state (loading, ready, chosen, bad).",
           (({"queue": one.folder, "state": state}, one.files[state]) for one in ok for state in _folder.STATES))
    family("turbo_queue_orphaned_files", "gauge",
           "loading_/chosen_ files whose process died, waiting for recovery.",
           (({"queue": one.folder, "state": state},
             sum(1 for name in one.orphaned if name.startswith(state + "_")))
            for one in ok if one.orphaned is not None for state in _HELD))
    family("turbo_queue_backlog_items", "gauge",
           "Unacknowledged items in ready_ and chosen_ batches (batches being filled are not counted).",
           (({"queue": one.folder}, one.backlog_items) for one in ok))
    family("turbo_queue_uncounted_batches", "gauge",
           "ready_/chosen_ batches whose item count could not be read (left out of the backlog).",
           (({"queue": one.folder}, one.uncounted_batches) for one in ok))
    family("turbo_queue_oldest_ready_age_seconds", "gauge",
           "Seconds since the oldest ready_ batch was created (0 when none waits).",
           (({"queue": one.folder}, round(one.oldest_ready_age or 0.0, 3)) for one in ok))
    if counters:
        for name, attr, index, text in (
            ("turbo_queue_batches_published_total", "published_total", "batches",
             "Batches handed over (loading_ renamed ready_)."),
            ("turbo_queue_items_published_total", "published_total", "items", "Items in the batches handed over."),
            ("turbo_queue_batches_consumed_total", "consumed_total", "batches",
             "Batches finished by consumers (chosen_ deleted)."),
            ("turbo_queue_items_consumed_total", "consumed_total", "items", "Items acknowledged by consumers."),
        ):
            family(name, "counter", text + " Counted since watching began.",
                   (({"queue": one.folder}, getattr(getattr(one, attr), index))
                    for one in figures if getattr(one, attr) is not None))
        family("turbo_queue_batches_uncounted_total", "counter",
               "Batches published or consumed that were gone before their item count could be read; "
               "the items_*_total counters leave their items out.",
               (({"queue": one.folder, "flow": flow}, getattr(one, attr).uncounted)
                for one in figures for flow, attr in (("published", "published_total"), ("consumed", "consumed_total"))
                if getattr(one, attr) is not None))
    return "\n".join(out) + "\n"


# -- the commands ----------------------------------------------------------------------------------


class HelpFormatter(argparse.HelpFormatter):
    """Wraps prose paragraphs of the description and epilog; keeps example and table lines as written
    (a paragraph with an indented line)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = text.split("\n\n")
        out = []
        for paragraph in paragraphs:
            if any(line.startswith(" ") for line in paragraph.splitlines()):
                out.append("\n".join(indent + line for line in paragraph.splitlines()))
            else:
                out.append(super()._fill_text(paragraph, width, indent))
        return "\n\n".join(out)


def seconds(text: str) -> float:
    """An argparse type: a number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, 0 or more, got {text!r}")
    return value


class _Terminated(BaseException):
    """SIGTERM arrived: stop as asked, cleaning up on the way out."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


def _problems(figures: Sequence[QueueFigures], command: str) -> int:
    """Say what is wrong with the folders on stderr; the exit code that goes with it."""
    code = EXIT_OK
    for one in figures:
        if not one.exists:
            print(f"turbo-queue {command}: {one.folder}: no such folder", file=sys.stderr)
            code = max(code, EXIT_USAGE)
        elif one.error == "permission denied":
            print(f"turbo-queue {command}: {one.folder}: permission denied (run as a user who may read the "
                  f"queue folder)", file=sys.stderr)
            code = max(code, EXIT_PERMISSION)
        elif one.error:
            print(f"turbo-queue {command}: {one.folder}: {one.error}", file=sys.stderr)
            code = max(code, EXIT_USAGE)
    return code


def _sampled(folders: Sequence[str], sample: float, names: bool = False) -> List[QueueFigures]:
    """The figures of ``folders``, watched for ``sample`` seconds first when that is more than 0."""
    if sample <= 0:
        return [snapshot(folder, names) for folder in folders]
    with Session(folders) as session:
        session.figures()  # the first look, so that what was there before is not counted as new
        deadline = time.monotonic() + sample
        while (left := deadline - time.monotonic()) > 0:
            session.wait(min(left, REDRAW_EVERY), events=False)
            session.process()
        return session.figures(names)


def _unique(folders: Sequence[str]) -> List[str]:
    seen: Dict[str, None] = {}
    for folder in folders:
        seen.setdefault(os.path.abspath(folder), None)
    return list(seen)


def stats_command(args: Any) -> int:
    folders = _unique(args.folders)
    figures = _sampled(folders, args.sample)
    code = _problems(figures, "stats")
    if args.json:
        print(json.dumps(stats_document(figures, args.sample), indent=2))
    elif args.prometheus:
        sys.stdout.write(prometheus_text(figures, counters=args.sample > 0))
    else:
        width = shutil.get_terminal_size().columns
        lines = render(figures, width, blocks=_blocks_for(sys.stdout))
        print("\n".join(text for text, _ in lines))
    return code


def monitor_command(args: Any) -> int:
    folders = _unique(args.folders)
    if args.sample and not args.once:
        print("turbo-queue monitor: --sample goes with --once (the live view measures rates all the time)",
              file=sys.stderr)
        return EXIT_USAGE
    if args.once:
        figures = _sampled(folders, args.sample, names=args.ls)
        code = _problems(figures, "monitor")
        width = shutil.get_terminal_size().columns
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(figures[0].time))
        header = "" if args.quiet else f"turbo-queue monitor  {stamp}" + (
            f"  (rates over {args.sample:g} s)" if args.sample > 0 else "")
        lines = render(figures, width, listing=args.ls, blocks=_blocks_for(sys.stdout), header=header)
        print("\n".join(text for text, _ in lines))
        return code
    if not (sys.stdout.isatty()):
        print("turbo-queue monitor: the live view needs a terminal; use --once (or `turbo-queue stats`) "
              "to print the figures once", file=sys.stderr)
        return EXIT_USAGE
    return _LiveView(folders, listing=args.ls, quiet=args.quiet).run()


class _LiveView:
    """The full-screen view: plain ANSI, alternate screen, redrawn on events at most 4 times a second."""

    def __init__(self, folders: Sequence[str], listing: bool, quiet: bool) -> None:
        self.session = Session(folders)
        self.listing = listing
        self.quiet = quiet
        self.out = sys.stdout
        self.fd = self.out.fileno()
        self.keys = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else None
        self.blocks = _blocks_for(self.out)
        self.color = "NO_COLOR" not in os.environ and os.environ.get("TERM", "") != "dumb"
        self.resized = True
        self.size = os.terminal_size((80, 24))

    def run(self) -> int:
        import termios
        import tty

        saved = termios.tcgetattr(self.keys) if self.keys is not None else None
        old_winch = signal.signal(signal.SIGWINCH, self._on_winch)
        old_term = signal.signal(signal.SIGTERM, _on_sigterm)
        old_wakeup = -1
        try:
            self.session.start()
            old_wakeup = signal.set_wakeup_fd(self.session.signal_fd)  # a resize wakes the loop at once
            if self.keys is not None:
                tty.setcbreak(self.keys, termios.TCSANOW)  # keys one by one, no echo; Ctrl-C stays SIGINT
            self._write("\x1b[?1049h\x1b[?25l\x1b[2J")  # alternate screen, hide the cursor
            return self._loop()
        except _Terminated:
            return EXIT_OK
        finally:
            self._write("\x1b[?25h\x1b[?1049l")  # show the cursor, back to the normal screen
            if saved is not None:
                try:
                    termios.tcsetattr(self.keys, termios.TCSADRAIN, saved)
                except termios.error:
                    pass  # the terminal is gone
            signal.set_wakeup_fd(old_wakeup)
            signal.signal(signal.SIGWINCH, old_winch)
            signal.signal(signal.SIGTERM, old_term)
            self.session.stop()

    def _on_winch(self, signum: int, frame: object) -> None:
        self.resized = True

    def _write(self, text: str) -> None:
        try:
            self.out.write(text)
            self.out.flush()
        except OSError:
            pass  # the terminal went away; the loop ends on the next key or signal

    def _loop(self) -> int:
        """Draw when something changed (or the clock says so), at most every ``REDRAW_EVERY``
        seconds: between two pictures, events wait in the queue and do not wake this thread."""
        last_draw = -math.inf
        next_tick = 0.0
        last_frame = ""
        while True:
            self.session.process()
            now = time.monotonic()
            due = now - last_draw >= REDRAW_EVERY
            if due and (self.resized or now >= next_tick or self.session.dirty):
                if now >= next_tick:
                    self.session.tick()
                    next_tick = now + TICK
                if self.resized:
                    self.resized = False
                    try:
                        self.size = os.get_terminal_size(self.fd)
                    except OSError:
                        pass
                    last_frame = ""  # the terminal cleared or reflowed: draw everything
                frame = self._frame()
                if frame != last_frame:
                    self._write(frame)
                    last_frame = frame
                last_draw, due = now, False
            keys = [self.keys] if self.keys is not None else []
            if due:  # nothing to draw: sleep until an event, a key, a signal or the clock
                ready = self.session.wait(next_tick - now, keys)
            else:  # just drawn: sleep until the next picture may be drawn
                ready = self.session.wait(last_draw + REDRAW_EVERY - now, keys, events=False)
            if ready:
                try:
                    typed = os.read(self.keys, 64)  # type: ignore[arg-type]
                except OSError:
                    typed = b""
                if not typed or b"q" in typed.lower():
                    return EXIT_OK
                if b"l" in typed.lower():
                    self.listing = not self.listing
                    self.resized = True

    def _frame(self) -> str:
        width, height = self.size.columns, self.size.lines
        figures = self.session.figures(self.listing)
        header = f"turbo-queue monitor  {time.strftime('%H:%M:%S')}   q: quit   l: ls -C"
        if self.session.polling:
            header += "   (some folders are looked at every second: no inotify watch)"
        lines = render(figures, max(20, width - 1), listing=self.listing, blocks=self.blocks,
                       header="" if self.quiet else header)
        if len(lines) > height:
            hidden = len(lines) - height + 1
            lines = lines[: height - 1] + [(f"… {hidden:,} more lines: make the terminal taller", "dim")]
        styles = {"title": "\x1b[1m", "alert": "\x1b[31m", "dim": "\x1b[2m"} if self.color else {}
        parts = ["\x1b[H"]
        for i, (text, style) in enumerate(lines):
            text = text[: max(0, width - 1)]
            code = styles.get(style, "")
            parts.append(f"{code}{text}\x1b[0m" if code else text)
            parts.append("\x1b[K" + ("\r\n" if i < len(lines) - 1 else ""))
        parts.append("\x1b[J")
        return "".join(parts)


# -- exporter --------------------------------------------------------------------------------------


def parse_listen(text: str) -> Tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``PORT`` (then on 127.0.0.1); ValueError says why not."""
    host, port_text = "127.0.0.1", text
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or not text[close + 1:].startswith(":"):
            raise ValueError(f"{text!r}: write an IPv6 address as [ADDRESS]:PORT")
        host, port_text = text[1:close], text[close + 2:]
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        if not host:
            raise ValueError(f"{text!r} names no host: give 127.0.0.1:PORT (this machine only) "
                             f"or 0.0.0.0:PORT (every interface)")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{text!r}: the port must be a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{text!r}: the port must be between 0 and 65535")
    return host, port


def _metrics_server(session: Session, host: str, port: int, verbose: bool) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "turbo-queue-exporter"

        def do_GET(self) -> None:
            self._answer(send_body=True)

        def do_HEAD(self) -> None:
            self._answer(send_body=False)

        def _answer(self, send_body: bool) -> None:
            path = urllib.parse.urlsplit(self.path).path
            if path == "/metrics":
                body = prometheus_text(session.figures()).encode()
                kind = "text/plain; version=0.0.4; charset=utf-8"
                status = 200
            elif path == "/":
                body = b"turbo-queue exporter: the metrics are at /metrics\n"
                kind, status = "text/plain; charset=utf-8", 200
            else:
                body = b"not found: the metrics are at /metrics\n"
                kind, status = "text/plain; charset=utf-8", 404
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            if verbose:
                log.info("turbo-queue exporter: %s %s", self.address_string(), format % args)

    class Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True

    return Server((host, port), Handler)


def exporter_command(args: Any) -> int:
    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        print(f"turbo-queue exporter: --listen {exc}", file=sys.stderr)
        return EXIT_USAGE
    folders = _unique(args.folders)
    for one in [snapshot(folder) for folder in folders]:
        if not one.exists:
            log.warning("turbo-queue exporter: %s does not exist (yet); it is reported as "
                        "turbo_queue_folder_exists 0 until it appears", one.folder)
        elif one.error:
            log.warning("turbo-queue exporter: %s: %s", one.folder, one.error)
    session = Session(folders)
    try:
        server = _metrics_server(session, host, port, args.verbose > 0)
    except OSError as exc:
        reason = "permission denied" if isinstance(exc, PermissionError) else (exc.strerror or str(exc))
        print(f"turbo-queue exporter: cannot listen on {args.listen}: {reason}", file=sys.stderr)
        return EXIT_PERMISSION if isinstance(exc, PermissionError) else EXIT_BAD_DATA
    old_term = signal.signal(signal.SIGTERM, _on_sigterm)
    thread = threading.Thread(target=server.serve_forever, name="turbo-queue-exporter", daemon=True)
    try:
        session.start()
        session.figures()  # the first look before serving: what was there before is not counted as new
        thread.start()
        bound_host, bound_port = server.server_address[:2]
        shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
        if not args.quiet:
            print(f"turbo-queue exporter: serving {_plural(len(folders), 'queue')} at "
                  f"http://{shown}:{bound_port}/metrics", flush=True)
        next_tick = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_tick:
                session.tick()
                next_tick = now + TICK
            session.wait(min(REDRAW_EVERY, next_tick - now), events=False)  # a scrape takes in new events
            session.process()
    except _Terminated:
        return EXIT_OK
    finally:
        signal.signal(signal.SIGTERM, old_term)
        if thread.is_alive():
            server.shutdown()
        server.server_close()
        session.stop()


# -- peek ------------------------------------------------------------------------------------------


def _to_json(value: object) -> object:
    return repr(value)


def peek_command(args: Any) -> int:
    target = os.path.abspath(args.target)
    try:
        info = os.stat(target)
    except FileNotFoundError:
        print(f"turbo-queue peek: {args.target}: no such file or folder", file=sys.stderr)
        return EXIT_USAGE
    except PermissionError:
        print(f"turbo-queue peek: {args.target}: permission denied", file=sys.stderr)
        return EXIT_PERMISSION
    if stat.S_ISDIR(info.st_mode):
        try:
            ready = _folder.ready_in_order(target)
        except PermissionError:
            print(f"turbo-queue peek: {args.target}: permission denied", file=sys.stderr)
            return EXIT_PERMISSION
        if not ready:
            if args.json:
                print(json.dumps({"file": None, "items": []}, indent=2))
            elif not args.quiet:
                print(f"{target}: no ready_ batch waits (the queue is empty, or every batch is being read)")
            return EXIT_OK
        path = os.path.join(target, ready[0])
    else:
        path = target
    name = os.path.basename(path)
    parsed = _folder.parse_name(name)
    if parsed is not None and parsed.state == _folder.LOADING:
        print(f"turbo-queue peek: {name} is being filled by its producer; peek at it once it is ready_",
              file=sys.stderr)
        return EXIT_BAD_DATA
    try:
        meta, items = read_items(path, args.n)
    except FileNotFoundError:
        print(f"turbo-queue peek: {path}: it was taken or finished meanwhile; try again", file=sys.stderr)
        return EXIT_USAGE if path == target else EXIT_BAD_DATA
    except PermissionError:
        print(f"turbo-queue peek: {path}: permission denied", file=sys.stderr)
        return EXIT_PERMISSION
    except (OSError, sqlite3.Error, ShardFormatError) as exc:
        print(f"turbo-queue peek: {path}: {_describe(exc)}", file=sys.stderr)
        return EXIT_BAD_DATA
    except Exception as exc:  # decoding runs the codec on the file's bytes: any error means "undecodable"
        print(f"turbo-queue peek: {path}: its items cannot be decoded ({type(exc).__name__}: {exc})",
              file=sys.stderr)
        return EXIT_BAD_DATA
    count, acked = int(meta["count"]), int(meta["acked"])  # type: ignore[call-overload]
    if args.json:
        print(json.dumps({"file": path, "codec": meta["codec"], "count": count, "acked": acked,
                          "created_by": meta.get("created_by"), "items": items}, indent=2, default=_to_json))
        return EXIT_OK
    if not args.quiet:
        print(f"{path}")
        print(f"  codec {meta['codec']}, {_plural(count, 'item')}, {acked:,} acknowledged, "
              f"created by {meta.get('created_by', '?')}")
        shown = f"the first {len(items):,}" if len(items) < count - acked else f"all {len(items):,}"
        print(f"  {shown} unacknowledged:" if items else "  nothing unacknowledged")
    for i, item in enumerate(items):
        print(f"{acked + i:>8}  {item!r}" if not args.quiet else repr(item))
    return EXIT_OK
