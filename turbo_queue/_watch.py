"""Wake waiting consumers and producers when a ``ready_`` file appears or goes.

On Linux one inotify instance per process watches every queue folder this process waits on, for
renames only: a ``ready_`` file appears and goes by rename, and asking the kernel for renames
alone spares every waiter the events of every SQLite write in the folder. Consumers wait for
arrivals (a ``ready_`` file appeared); a folder is watched for departures too (a ``ready_`` file
went) only once a producer of this process waits for room, so that a claim wakes no consumer.

One thread reads the events, and only while a thread of this process waits: a busy process
lets them queue in the kernel and is not woken by every rename in the folder. A waiter first
takes what queued (``mark``), then looks at the folder, then waits for the counter it marked to
change: an event that comes between the look and the wait is never missed, and one that came
before the look does not wake it again. Where there is no inotify, a watchdog observer does it.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import threading
import time
from typing import TYPE_CHECKING, Dict, List, Optional, Set, Tuple, cast

from . import _platform

if TYPE_CHECKING:
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers.api import BaseObserver

log = logging.getLogger("turbo_queue")

#: How long a waiter sleeps between looks when the filesystem gives no events (fallback only).
_POLL = 0.02

_READY = b"ready_"
_ARRIVALS = _platform.Inotify.MOVED_TO | _platform.Inotify.ONLYDIR
_RENAMES = _ARRIVALS | _platform.Inotify.MOVED_FROM


class FolderEvents:
    """Two counters of one folder, which move on when ``ready_`` files came (``arrivals``) and
    when they came or went (``changes``), and wake whoever waits for either."""

    def __init__(self, polling: bool = False) -> None:
        self.arrivals = 0
        self.changes = 0
        self.polling = polling
        self._watcher: Optional[_Watcher] = None  # whose reader thread counts these events (inotify)
        self._changed = threading.Condition(threading.Lock())

    def notify(self, arrived: bool = True) -> None:
        with self._changed:
            self.changes += 1
            self.arrivals += arrived
            self._changed.notify_all()

    def mark(self, arrivals: bool = False) -> int:
        """The counter to wait on, taken before a look at the folder: the events that queued
        while nobody waited are counted first (a look after this sees what they say)."""
        if self._watcher is not None:
            self._watcher.drain()
        return self.arrivals if arrivals else self.changes

    def wait(self, seen: int, timeout: float, arrivals: bool = False) -> None:
        """Return when ``changes`` (or ``arrivals``) is no longer ``seen``, or after ``timeout`` seconds."""
        if self.polling:
            timeout = min(timeout, _POLL)
        deadline = time.monotonic() + timeout
        watcher = self._watcher
        if watcher is not None:
            watcher.waiting(1)
        try:
            with self._changed:
                while (self.arrivals if arrivals else self.changes) == seen:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    self._changed.wait(remaining)
        finally:
            if watcher is not None:
                watcher.waiting(-1)

    # watchdog's handler interface, where there is no inotify
    def dispatch(self, event: object) -> None:
        went = os.path.basename(os.fsdecode(getattr(event, "src_path", ""))).startswith("ready_")
        came = os.path.basename(os.fsdecode(getattr(event, "dest_path", "") or "")).startswith("ready_")
        if came or went:
            self.notify(came)


class _Watcher:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inotify: Optional[_platform.Inotify] = None
        self._observer: Optional[BaseObserver] = None  # watchdog's, where there is no inotify
        self._folders: Dict[str, FolderEvents] = {}
        self._by_wd: Dict[int, FolderEvents] = {}
        self._folder_of: Dict[int, str] = {}
        self._departures: Set[str] = set()  # folders watched for ready_ files that go, too
        self._waiters = 0  # threads of this process waiting on an inotify-watched folder
        self._someone_waits = threading.Condition(threading.Lock())

    def events(self, folder: str, departures: bool = False) -> FolderEvents:
        with self._lock:
            found = self._folders.get(folder)
            if found is None:
                found = self._folders[folder] = self._schedule(folder, departures)
            elif departures and folder not in self._departures and self._inotify is not None and not found.polling:
                try:
                    self._inotify.add_watch(folder, _RENAMES)  # the same watch, its mask widened
                except OSError as exc:
                    self._give_up(folder, found, exc)
                else:
                    self._departures.add(folder)
            return found

    def _schedule(self, folder: str, departures: bool) -> FolderEvents:
        handler = FolderEvents()
        try:
            try:
                if self._inotify is None:
                    self._inotify = _platform.Inotify(nonblocking=True)
                    threading.Thread(target=self._run, args=(self._inotify,), name="turbo_queue-watch",
                                     daemon=True).start()
                wd = self._inotify.add_watch(folder, _RENAMES if departures else _ARRIVALS)
                self._by_wd[wd], self._folder_of[wd] = handler, folder
                handler._watcher = self
                if departures:
                    self._departures.add(folder)
            except OSError as exc:
                if exc.errno != errno.ENOSYS:
                    raise
                self._watch_with_watchdog(folder, handler)
        except OSError as exc:  # e.g. inotify's per-user instance or watch limit is reached
            self._give_up(folder, handler, exc)
        return handler

    @staticmethod
    def _give_up(folder: str, handler: FolderEvents, exc: OSError) -> None:
        log.warning(
            "turbo_queue: cannot watch %s for changes (%s); looking every %.0f ms instead. "
            "Raise fs.inotify.max_user_instances / max_user_watches to fix this.",
            folder, exc, _POLL * 1000,
        )
        handler.polling = True

    def waiting(self, change: int) -> None:
        """A thread begins (1) or ends (-1) a wait: the reader thread reads while any waits."""
        with self._someone_waits:
            self._waiters += change
            if self._waiters == 1 and change > 0:
                self._someone_waits.notify()

    def drain(self) -> None:
        """Count the events that queued, without waiting for more."""
        inotify = self._inotify
        if inotify is not None:
            try:
                self._dispatch(inotify.read())
            except OSError:  # closed after a fork in this process's child: not ours
                pass

    def _run(self, inotify: _platform.Inotify) -> None:
        """The reader thread: while a thread waits, wake the waiters of each folder where a
        ready_ file came or went. It sleeps while none waits; the kernel keeps the events."""
        poller = select.poll()
        poller.register(inotify.fd, select.POLLIN)
        while True:
            with self._someone_waits:
                while not self._waiters:
                    self._someone_waits.wait()
            try:
                poller.poll()
                self._dispatch(inotify.read())
            except OSError:  # closed after a fork in this process's child: not ours
                return

    def _dispatch(self, events: List[Tuple[int, int, bytes]]) -> None:
        woken: Dict[FolderEvents, bool] = {}  # -> whether a ready_ file came
        for wd, mask, name in events:
            if name.startswith(_READY):
                handler = self._by_wd.get(wd)
                if handler is not None:
                    woken[handler] = woken.get(handler, False) or bool(mask & _platform.Inotify.MOVED_TO)
            elif mask & _platform.Inotify.Q_OVERFLOW:  # events were lost: everyone looks again
                woken.update(dict.fromkeys(self._by_wd.values(), True))
            elif mask & _platform.Inotify.IGNORED:  # the folder was removed
                woken.update(dict.fromkeys(self._forget_watch(wd), True))
        for handler, arrived in woken.items():
            handler.notify(arrived)

    def _forget_watch(self, wd: int) -> Set[FolderEvents]:
        """A removed folder: its waiters look every _POLL, and the next events() watches it anew."""
        with self._lock:
            handler = self._by_wd.pop(wd, None)
            folder = self._folder_of.pop(wd, None)
            if handler is None:
                return set()
            handler.polling = True
            if folder is not None and self._folders.get(folder) is handler:
                del self._folders[folder]
                self._departures.discard(folder)
            return {handler}

    def _watch_with_watchdog(self, folder: str, handler: FolderEvents) -> None:
        from watchdog.events import FileMovedEvent
        from watchdog.observers import Observer

        if self._observer is None:
            observer = Observer()
            observer.daemon = True
            observer.start()
            self._observer = observer
        observer = self._observer
        # watchdog calls only dispatch(), which FolderEvents has: no need to import watchdog to subclass its handler.
        watchdog_handler = cast("FileSystemEventHandler", handler)
        observer.schedule(watchdog_handler, folder, recursive=False, event_filter=[FileMovedEvent])

    def forget(self) -> None:
        """After fork: the reader thread does not exist in the child; start afresh when needed."""
        if self._inotify is not None:
            self._inotify.close()  # the child's copy only; the parent's thread reads its own
        _Watcher.__init__(self)


_watcher = _Watcher()
os.register_at_fork(after_in_child=_watcher.forget)


def events(folder: str, departures: bool = False) -> FolderEvents:
    """The counters of ``folder`` (an absolute path), watched from the first call on; for
    ``changes`` to count the ``ready_`` files that go, too, ask for ``departures``."""
    return _watcher.events(folder, departures)
