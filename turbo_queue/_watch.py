"""Wake waiting consumers and producers when a ``ready_`` file appears or goes.

On Linux one inotify instance per process, read by one thread, watches every queue folder this
process waits on, for renames only: a ``ready_`` file appears and goes by rename, and asking the
kernel for renames alone spares every waiter the events of every SQLite write in the folder.
Events go straight from that thread to the waiters. Elsewhere a watchdog observer does it.

A waiter reads ``generation`` before it looks at the folder and then waits for it to change, so
an event that arrives between the look and the wait is never missed.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from typing import TYPE_CHECKING, Dict, Optional, Set, cast

from . import _platform

if TYPE_CHECKING:
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers.api import BaseObserver

log = logging.getLogger("turbo_queue")

#: How long a waiter sleeps between looks when the filesystem gives no events (fallback only).
_POLL = 0.02

_READY = b"ready_"
_RENAMES = _platform.Inotify.MOVED_FROM | _platform.Inotify.MOVED_TO | _platform.Inotify.ONLYDIR


class FolderEvents:
    """Counts the changes of ``ready_`` files in one folder and wakes whoever waits for one."""

    def __init__(self, polling: bool = False) -> None:
        self.generation = 0
        self.polling = polling
        self._changed = threading.Condition(threading.Lock())

    def notify(self) -> None:
        with self._changed:
            self.generation += 1
            self._changed.notify_all()

    def wait(self, generation: int, timeout: float) -> None:
        """Return when ``generation`` has moved on, or after ``timeout`` seconds."""
        if self.polling:
            timeout = min(timeout, _POLL)
        with self._changed:
            if self.generation == generation and timeout > 0:
                self._changed.wait(timeout)

    # watchdog's handler interface, where there is no inotify
    def dispatch(self, event: object) -> None:
        names = (getattr(event, "src_path", ""), getattr(event, "dest_path", "") or "")
        if any(os.path.basename(os.fsdecode(name)).startswith("ready_") for name in names):
            self.notify()


class _Watcher:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inotify: Optional[_platform.Inotify] = None
        self._observer: Optional[BaseObserver] = None  # watchdog's, where there is no inotify
        self._folders: Dict[str, FolderEvents] = {}
        self._by_wd: Dict[int, FolderEvents] = {}
        self._folder_of: Dict[int, str] = {}

    def events(self, folder: str) -> FolderEvents:
        with self._lock:
            found = self._folders.get(folder)
            if found is None:
                found = self._folders[folder] = self._schedule(folder)
            return found

    def _schedule(self, folder: str) -> FolderEvents:
        handler = FolderEvents()
        try:
            try:
                if self._inotify is None:
                    self._inotify = _platform.Inotify()
                    threading.Thread(target=self._run, args=(self._inotify,), name="turbo_queue-watch",
                                     daemon=True).start()
                wd = self._inotify.add_watch(folder, _RENAMES)
                self._by_wd[wd], self._folder_of[wd] = handler, folder
            except OSError as exc:
                if exc.errno != errno.ENOSYS:
                    raise
                self._watch_with_watchdog(folder, handler)
        except OSError as exc:  # e.g. inotify's per-user instance or watch limit is reached
            log.warning(
                "turbo_queue: cannot watch %s for changes (%s); looking every %.0f ms instead. "
                "Raise fs.inotify.max_user_instances / max_user_watches to fix this.",
                folder, exc, _POLL * 1000,
            )
            handler.polling = True
        return handler

    def _run(self, inotify: _platform.Inotify) -> None:
        """The reader thread: wake the waiters of each folder where a ready_ file came or went."""
        while True:
            try:
                events = inotify.read()
            except OSError:  # closed after a fork in this process's child: not ours
                return
            woken: Set[FolderEvents] = set()
            for wd, mask, name in events:
                if name.startswith(_READY):
                    handler = self._by_wd.get(wd)
                    if handler is not None:
                        woken.add(handler)
                elif mask & _platform.Inotify.Q_OVERFLOW:  # events were lost: everyone looks again
                    woken.update(self._by_wd.values())
                elif mask & _platform.Inotify.IGNORED:  # the folder was removed
                    woken.update(self._forget_watch(wd))
            for handler in woken:
                handler.notify()

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


def events(folder: str) -> FolderEvents:
    """The change counter of ``folder`` (an absolute path), watched from the first call on."""
    return _watcher.events(folder)
