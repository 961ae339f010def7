"""Cheap cross-process item counts behind ``qsize()``, ``maxsize`` and ``JoinableQueue.join()``.

Each process that uses a queue folder keeps its own counters (items put, items got, tasks done)
in a small file under ``<folder>/.counters/``, mapped into memory: counting is an add to shared
memory, never a file write. Anyone sums the files to get the queue's counts, also across separate
programs. A process holds the flock of its own file while it lives.

A process that is gone must not cost anything: its counts are **folded** into ``folded`` (the
sums of every process that left, and the name of the last file folded in) and its file removed.
A process folds its own file when it closes its queue (normal exit included); the files of
processes that died (their flock is free) are folded by whoever reads the counts next, at most
once a second. Folding holds ``.fold.lock`` exclusively and reading holds it shared, so a reader
never sees a count twice or not at all; ``folded`` changes by one atomic store, and naming the
file it took in makes a fold that died between that store and the file's removal harmless.

The counts are exact while no process crashes. A producer killed with items still in its batch
counts them as put (they are lost), and a consumer killed before it acknowledged what it got sees
those items again: both make ``qsize()`` approximate afterwards, as the standard library says it is.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time
import uuid
import weakref
from typing import Dict, Optional, Tuple

from . import _platform

PUT, GOT, DONE = 0, 1, 2
_SLOTS = 4  # one spare for later use
_SIZE = 8 * _SLOTS
FOLDER = ".counters"
#: The counts of processes that are gone: put, got, done, then the name of the last file folded.
FOLDED = "folded"
_FOLD_LOCK = ".fold.lock"
#: Prefix of a counter file being made: it becomes ``.cnt`` once its process holds its lock.
_MAKING = ".making_"
_COUNTS = struct.Struct("=qqq")  # the first three slots, as the mapping holds them
#: How often a reader looks for files of processes that died.
_FOLD_EVERY = 1.0

Counts = Tuple[int, int, int]


class Counters:
    """One process's counters for one queue folder (each Queue object has its own)."""

    def __init__(self, folder: str) -> None:
        where = os.path.join(folder, FOLDER)
        _platform.make_folder(where)
        while True:
            name = f"{os.getpid()}_{uuid.uuid4().hex}.cnt"
            making = os.path.join(where, _MAKING + name)
            fd = os.open(making, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _platform.FILE_MODE)
            try:
                # Held while this process lives: a free lock means it is gone. Only a locked file
                # is ever seen as .cnt; a reader that found this one unlocked removes it: again.
                if _platform.try_lock(fd):
                    os.ftruncate(fd, _SIZE)
                    os.rename(making, os.path.join(where, name))
                    self._map = mmap.mmap(fd, _SIZE)
                    break
            except FileNotFoundError:
                pass
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        self._fd = fd
        self._where = where
        #: The counters as int64s: PUT, GOT, DONE. Each slot has one writer in this process
        #: (the Enqueuer under its lock, the Dequeuer under its lock, ``add`` for DONE).
        self.view = memoryview(self._map).cast("q")
        self._lock = threading.Lock()
        self.name = name
        self.path = os.path.join(where, name)
        _open.add(self)

    def add(self, slot: int, n: int = 1) -> None:
        with self._lock:
            self.view[slot] += n

    def retire(self) -> None:
        """Fold these counts into the folder's total and remove the file: this process counts no more."""
        if self._fd < 0:
            return
        _open.discard(self)
        with _FoldLock(self._where, wait=True):
            _fold(self._where, self.name, (self.view[PUT], self.view[GOT], self.view[DONE]))
        fd, self._fd = self._fd, -1
        os.close(fd)  # the mapping stays: a late add lands in memory no one reads


class Totals:
    """Sums the counters of one folder: the live processes' files, and what the gone ones left."""

    def __init__(self, folder: str) -> None:
        self._where = os.path.join(folder, FOLDER)
        self._views: Dict[str, memoryview] = {}
        self._lock_fd = -1
        self._lock_pid = 0
        self._folded: Optional[Folded] = None
        self._folded_at = float("-inf")

    def read(self) -> Counts:
        """(put, got, done) over all processes that ever used the folder."""
        if time.monotonic() - self._folded_at >= _FOLD_EVERY:
            self._folded_at = time.monotonic()
            fold_dead(self._where)
        fd = self._lock()
        if fd < 0:
            return 0, 0, 0
        # Under the shared lock each process's counts are in ``folded`` or in a file we map, never
        # in both or neither; their slots are then read outside it (they only grow).
        _platform.lock_shared(fd)
        try:
            if self._folded is None:
                self._folded = Folded.open(self._where, create=False)
            put, got, done, last = (0, 0, 0, "") if self._folded is None else self._folded.read()
            views = []
            for name in os.listdir(self._where):
                if name.endswith(".cnt") and name != last:  # ``last`` is in ``folded`` already
                    view = self._views.get(name) or self._open(name)
                    if view is not None:
                        views.append((name, view))
        finally:
            _platform.unlock(fd)
        for gone in self._views.keys() - {name for name, _ in views}:  # folded: in ``folded`` now
            self._views.pop(gone).release()
        for _, view in views:
            put += view[PUT]
            got += view[GOT]
            done += view[DONE]
        return put, got, done

    def _lock(self) -> int:
        """This process's descriptor of the fold lock (its own: flocks belong to open files)."""
        if self._lock_pid != os.getpid():
            try:
                self._lock_fd = _open_lock(self._where)
            except FileNotFoundError:
                return -1
            self._lock_pid = os.getpid()
        return self._lock_fd
    def _open(self, name: str) -> Optional[memoryview]:
        """A view of the counter file ``name`` (mapped once, then kept); None if it is not one."""
        try:
            fd = os.open(os.path.join(self._where, name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            mapped = mmap.mmap(fd, _SIZE, prot=mmap.PROT_READ)
        except ValueError:  # shorter than a counter file: not one of ours
            return None
        finally:
            os.close(fd)
        view = self._views[name] = memoryview(mapped).cast("q")
        return view


def fold_dead(where: str) -> int:
    """Fold the counter files of processes that are gone (their flock is free); return how many.

    Skipped when another process is folding. Also removes a ``.making_`` file whose maker died.
    """
    try:
        names = os.listdir(where)
    except FileNotFoundError:
        return 0
    if not any(name.endswith(".cnt") or name.startswith(_MAKING) for name in names):
        return 0
    folded = 0
    with _FoldLock(where, wait=False) as held:
        if not held:
            return 0
        for name in names:
            if name.endswith(".cnt") or name.startswith(_MAKING):
                folded += _fold_if_dead(where, name)
    return folded


def _fold_if_dead(where: str, name: str) -> int:
    path = os.path.join(where, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return 0  # folded or removed meanwhile, or not a file of ours
    try:
        if not _platform.try_lock(fd):
            return 0  # its process lives
        if name.startswith(_MAKING):  # its maker died, or has not locked it yet: it makes another
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            return 0
        data = os.pread(fd, _COUNTS.size, 0)
        counts = _COUNTS.unpack(data) if len(data) == _COUNTS.size else (0, 0, 0)
        _fold(where, name, counts)
        return 1
    finally:
        os.close(fd)


def _fold(where: str, name: str, counts: Counts) -> None:
    """Add ``counts`` of file ``name`` to ``folded`` and remove the file (the fold lock is held)."""
    folded = Folded.open(where, create=True)
    assert folded is not None
    try:
        put, got, done, last = folded.read()
        if last != name:  # else a fold that died after writing ``folded`` took it in already
            folded.write((put + counts[PUT], got + counts[GOT], done + counts[DONE]), name)
    finally:
        folded.close()
    try:
        os.unlink(os.path.join(where, name))
    except FileNotFoundError:
        pass


class Folded:
    """The ``folded`` file, mapped: a selector, then two records (put, got, done, the file folded last).

    A fold writes the record the selector does not point at, then flips the selector, one aligned
    8-byte store: a process killed in between leaves the old record in force. Readers and folders
    hold the fold lock (shared, exclusive), so no read sees a record being written. The file is
    made once and never replaced, so a reader maps it once.
    """

    _RECORD = struct.Struct("=qqq64s")
    _SIZE = 8 + 2 * _RECORD.size

    def __init__(self, mapped: mmap.mmap) -> None:
        self._map = mapped

    @classmethod
    def open(cls, where: str, *, create: bool) -> Optional["Folded"]:
        """The mapped file; None if no process has left yet (and ``create`` is false)."""
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        try:
            fd = os.open(os.path.join(where, FOLDED), flags, _platform.FILE_MODE)
        except FileNotFoundError:
            return None
        try:
            if os.fstat(fd).st_size < cls._SIZE:
                os.ftruncate(fd, cls._SIZE)  # zeros: record 0 in force, nothing folded
            return cls(mmap.mmap(fd, cls._SIZE))
        finally:
            os.close(fd)

    def read(self) -> Tuple[int, int, int, str]:
        (selected,) = struct.unpack_from("=q", self._map, 0)
        put, got, done, name = self._RECORD.unpack_from(self._map, 8 + (selected & 1) * self._RECORD.size)
        return put, got, done, name.rstrip(b"\0").decode()

    def write(self, counts: Counts, name: str) -> None:
        (selected,) = struct.unpack_from("=q", self._map, 0)
        other = 1 - (selected & 1)
        self._RECORD.pack_into(self._map, 8 + other * self._RECORD.size, *counts, name.encode())
        struct.pack_into("=q", self._map, 0, other)

    def close(self) -> None:
        self._map.close()


def _open_lock(where: str) -> int:
    return os.open(os.path.join(where, _FOLD_LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _platform.FILE_MODE)


class _FoldLock:
    """The fold lock, exclusive, on a descriptor of its own (closed on exit); with ``wait``
    false, ``as`` gives False when another process holds it."""

    def __init__(self, where: str, *, wait: bool) -> None:
        self.where, self.wait = where, wait

    def __enter__(self) -> bool:
        self.fd = _open_lock(self.where)
        if self.wait:
            _platform.lock(self.fd)
            return True
        return _platform.try_lock(self.fd)

    def __exit__(self, *exc_info: object) -> None:
        os.close(self.fd)


_open: "weakref.WeakSet[Counters]" = weakref.WeakSet()


def _after_fork() -> None:
    # A forked child must not keep its parent's counter files locked (the parent's flock would
    # outlive the parent); it makes counters of its own. The parent's mappings stay untouched.
    for inherited in list(_open):
        os.close(inherited._fd)
        inherited._fd = -1  # nor may it retire them: they are the parent's
    _open.clear()


os.register_at_fork(after_in_child=_after_fork)
