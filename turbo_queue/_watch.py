"""Wake waiting consumers and producers when a ``ready_`` file appears or goes (inotify via watchdog).

One observer per process watches every queue folder this process waits on. A waiter reads
``generation`` before it looks at the folder and then waits for it to change, so an event that
arrives between the look and the wait is never missed.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Dict, Optional

from watchdog.events import FileMovedEvent, FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger("turbo_queue")

#: How long a waiter sleeps between looks when the filesystem gives no events (fallback only).
_POLL = 0.02


class FolderEvents(FileSystemEventHandler):
    """Counts the changes of ``ready_`` files in one folder and wakes whoever waits for one."""

    def __init__(self, polling: bool = False) -> None:
        self.generation = 0
        self.polling = polling
        self._changed = threading.Condition(threading.Lock())

    def on_any_event(self, event: FileSystemEvent) -> None:
        src = os.path.basename(os.fsdecode(event.src_path))
        dest = os.path.basename(os.fsdecode(event.dest_path or ""))
        if src.startswith("ready_") or dest.startswith("ready_"):
            self.notify()

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


class _Watcher:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._observer: Optional[Observer] = None
        self._folders: Dict[str, FolderEvents] = {}

    def events(self, folder: str) -> FolderEvents:
        with self._lock:
            found = self._folders.get(folder)
            if found is None:
                found = self._folders[folder] = self._schedule(folder)
            return found

    def _schedule(self, folder: str) -> FolderEvents:
        handler = FolderEvents()
        try:
            if self._observer is None:
                observer = Observer()
                observer.daemon = True
                observer.start()
                self._observer = observer
            # Only renames: a ready_ file appears and goes by rename, and asking the kernel for
            # renames alone spares every waiter the events of every SQLite write in the folder.
            self._observer.schedule(handler, folder, recursive=False, event_filter=[FileMovedEvent])
        except OSError as exc:  # e.g. inotify's per-user instance or watch limit is reached
            log.warning(
                "turbo_queue: cannot watch %s for changes (%s); looking every %.0f ms instead. "
                "Raise fs.inotify.max_user_instances / max_user_watches to fix this.",
                folder, exc, _POLL * 1000,
            )
            handler.polling = True
        return handler

    def forget(self) -> None:
        """After fork: the observer's threads do not exist in the child; start afresh when needed."""
        self._lock = threading.Lock()
        self._observer = None
        self._folders = {}


_watcher = _Watcher()
os.register_at_fork(after_in_child=_watcher.forget)


def events(folder: str) -> FolderEvents:
    """The change counter of ``folder`` (an absolute path), watched from the first call on."""
    return _watcher.events(folder)
