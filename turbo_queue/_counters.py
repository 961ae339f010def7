"""Cheap cross-process item counts behind ``qsize()``, ``maxsize`` and ``JoinableQueue.join()``.

Each process that uses a queue folder keeps its own counters (items put, items got, tasks done)
in a small file under ``<folder>/.counters/``, mapped into memory: counting is an add to shared
memory, never a file write. Anyone sums the files to get the queue's counts, also across separate
programs. A process holds the flock of its own file while it lives.

The counts are exact while no process crashes. A producer killed with items still in its batch
counts them as put (they are lost), and a consumer killed before it acknowledged what it got sees
those items again: both make ``qsize()`` approximate afterwards, as the standard library says it is.
"""

from __future__ import annotations

import mmap
import os
import threading
import uuid
import weakref
from typing import Dict, List, Optional, Tuple

from . import _platform

PUT, GOT, DONE = 0, 1, 2
_SLOTS = 4  # one spare for later use
_SIZE = 8 * _SLOTS
FOLDER = ".counters"


class Counters:
    """One process's counters for one queue folder (each Queue object has its own)."""

    def __init__(self, folder: str) -> None:
        where = os.path.join(folder, FOLDER)
        _platform.make_folder(where)
        path = os.path.join(where, f"{os.getpid()}_{uuid.uuid4().hex}.cnt")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _platform.FILE_MODE)
        try:
            os.ftruncate(fd, _SIZE)
            _platform.try_lock(fd)  # held while this process lives: recovery can tell it is alive
            self._map = mmap.mmap(fd, _SIZE)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        #: The counters as int64s: PUT, GOT, DONE. Each slot has one writer in this process
        #: (the Enqueuer under its lock, the Dequeuer under its lock, ``add`` for DONE).
        self.view = memoryview(self._map).cast("q")
        self._lock = threading.Lock()
        self.path = path
        _open.add(self)

    def add(self, slot: int, n: int = 1) -> None:
        with self._lock:
            self.view[slot] += n


class Totals:
    """Sums every process's counters of one folder (maps each file once, then reads memory)."""

    def __init__(self, folder: str) -> None:
        self._where = os.path.join(folder, FOLDER)
        self._views: Dict[str, memoryview] = {}

    def read(self) -> Tuple[int, int, int]:
        """(put, got, done) over all processes that ever used the folder."""
        try:
            names = os.listdir(self._where)
        except FileNotFoundError:
            return 0, 0, 0
        views: List[memoryview] = []
        for name in names:
            view = self._views.get(name)
            if view is None:
                view = self._open(name)
                if view is None:
                    continue
            views.append(view)
        put = got = done = 0
        for view in views:
            put += view[PUT]
            got += view[GOT]
            done += view[DONE]
        return put, got, done

    def _open(self, name: str) -> Optional[memoryview]:
        """A view of the counter file ``name`` (mapped once, then kept); None if it is not one yet."""
        if not name.endswith(".cnt"):
            return None
        try:
            fd = os.open(os.path.join(self._where, name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            if os.fstat(fd).st_size < _SIZE:
                return None  # being created: it counts nothing yet
            mapped = mmap.mmap(fd, _SIZE, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        view = self._views[name] = memoryview(mapped).cast("q")
        return view


_open: "weakref.WeakSet[Counters]" = weakref.WeakSet()


def _after_fork() -> None:
    # A forked child must not keep its parent's counter files locked (the parent's flock would
    # outlive the parent); it makes counters of its own. The parent's mappings stay untouched.
    for inherited in list(_open):
        os.close(inherited._fd)
    _open.clear()


os.register_at_fork(after_in_child=_after_fork)
