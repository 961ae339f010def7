"""Watching queue folders: a ``Session`` feeds filesystem events (watchdog) to the trackers.

A ``loading_`` -> ``ready_`` rename is a batch handed over, a ``chosen_`` file deleted is a batch
consumed. The folder is listed again only when an event says it changed.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import sqlite3
import stat
import threading
import time
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

from .._errors import BatchFormatError
from .figures import QueueFigures, QueueTracker
from .reading import read_counts

log = logging.getLogger("turbo_queue")

#: Clock-driven figures (ages, rates falling to zero, processes that died) are refreshed this often.
TICK = 1.0
#: A loop that only counts (a sample, the exporter) takes in the queued events this often.
TAKE_EVENTS_EVERY = 0.25


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
        # folder -> (watch, path watched, its (st_dev, st_ino), handler)
        self._watches: Dict[str, Tuple[Any, str, Tuple[int, int], "_Handler"]] = {}

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
                elif kind == "lost":
                    self._forget(tracker)
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
                self._forget(tracker)
            tracker.dirty = True  # it appeared, went or was replaced: look again
            handler = _Handler(self, tracker, target)
            try:
                watch = self._schedule(handler, target)
            except (FileNotFoundError, NotADirectoryError):
                handler.retired = True  # watchdog keeps a handler whose watch failed
                continue  # it went between the look and the watch: look again
            except OSError as exc:  # inotify's limits, or a folder this user may not read
                handler.retired = True
                if folder not in self.polling:
                    self.polling.append(folder)
                    hint = "" if isinstance(exc, PermissionError) else (
                        " Raise fs.inotify.max_user_instances / max_user_watches to fix this.")
                    log.warning("turbo-queue: cannot watch %s for changes (%s); looking at it every %.0f s "
                                "instead.%s", target, exc.strerror or exc, TICK, hint)
                return
            if folder in self.polling:
                self.polling.remove(folder)
            self._watches[folder] = (watch, target, identity, handler)
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

    def _forget(self, tracker: QueueTracker) -> None:
        """Drop the folder's watch: its path went, or it is to be replaced."""
        current = self._watches.pop(tracker.folder, None)
        if current is None:
            return
        watch, _path, _identity, handler = current
        handler.retired = True
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
        self.retired = False  # its watch was dropped: events still on their way are not news

    def dispatch(self, event: Any) -> None:
        if self.retired:
            return
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(getattr(event, "dest_path", "") or "")
        kind = event.event_type
        if kind not in ("created", "deleted", "moved"):
            return
        if src == self.path:
            # The watched path itself went: its watch is dead even if a new folder of the same
            # name (and, ext4 reusing a freed inode, the same st_ino) is there when this is read.
            self.retired = True
            self.session.post(self.tracker, "lost", src, dest)
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
                # Handed over or claimed: read its count now, in this thread, before a consumer can
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
        except (OSError, sqlite3.Error, BatchFormatError, ValueError, TypeError):
            return None  # reported when the tracker reads it
        if found is not None:
            return found
    return None


def sample(folders: Sequence[str], seconds: float, names: bool = False) -> List[QueueFigures]:
    """The figures of ``folders``, watched for ``seconds`` first when that is more than 0."""
    if seconds <= 0:
        return [QueueTracker(folder).figures(names) for folder in folders]
    with Session(folders) as session:
        session.figures()  # the first look, so that what was there before is not counted as new
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            session.wait(min(left, TAKE_EVENTS_EVERY), events=False)
            session.process()
        return session.figures(names)
