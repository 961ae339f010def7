"""The folder protocol's names and moves: create, roll, claim, hand back, list in hand-over order.

A batch file is ``<state>_<epoch>_<uuid>.db``; its epoch and uuid never change. Every rename of
a batch file is done by the process that holds the file's flock (a ``Batch``).
"""

from __future__ import annotations

import errno
import os
import random
import re
import stat
import time
import weakref
from typing import Dict, FrozenSet, List, NamedTuple, Optional, Tuple

from . import _platform

LOADING, READY, CHOSEN, BAD = "loading", "ready", "chosen", "bad"
STATES = (LOADING, READY, CHOSEN, BAD)
#: Prefix of the hidden file a producer creates and locks before it becomes ``loading_``.
CREATING = ".creating_"

_NAME = re.compile(r"(loading|ready|chosen|bad)_(\d+)_([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.db")
#: After losing a claim, a consumer picks at random among this many of the next oldest files.
_SPREAD = 4


class BatchName(NamedTuple):
    state: str
    epoch: int
    uid: str

    @property
    def filename(self) -> str:
        return f"{self.state}_{self.epoch}_{self.uid}.db"

    def as_state(self, state: str) -> "BatchName":
        return self._replace(state=state)


def parse_name(filename: str) -> Optional[BatchName]:
    """The parts of a protocol file name, or None for a file that is not the protocol's."""
    match = _NAME.fullmatch(filename)
    if match is None:
        return None
    return BatchName(match.group(1), int(match.group(2)), match.group(3))


def parse_creating(filename: str) -> Optional[BatchName]:
    """The name a hidden ``.creating_`` file will take, or None."""
    if not filename.startswith(CREATING):
        return None
    return parse_name(LOADING + "_" + filename[len(CREATING):])


class Batch:
    """A batch file this process holds under an exclusive flock on ``fd``."""

    __slots__ = ("folder", "_name", "path", "fd", "__weakref__")

    def __init__(self, folder: str, name: BatchName, fd: int) -> None:
        self.folder = folder
        self.name = name
        self.fd = fd
        _held.add(self)

    @property
    def name(self) -> BatchName:
        return self._name

    @name.setter
    def name(self, name: BatchName) -> None:
        self._name = name
        self.path = os.path.join(self.folder, name.filename)

    def move(self, state: str, durable: bool = False) -> None:
        """Rename to ``state`` (the SQLite connection must be closed: R1)."""
        target = self.name.as_state(state)
        if durable:
            os.fsync(self.fd)
        os.rename(self.path, os.path.join(self.folder, target.filename))
        self.name = target
        if durable:
            _platform.fsync_folder(self.folder)

    def rewrite(self, content: bytes, durable: bool = False) -> None:
        """Make ``content`` this file's bytes at once: it is written into a new hidden file, which
        is renamed over this one. A process that dies meanwhile leaves this file as it was, and a
        ``.creating_`` file that recovery removes: never a file half written."""
        _, fd = _hidden(self.folder, self.name.epoch, content, target=self.path, durable=durable)
        old, self.fd = self.fd, fd
        os.close(old)  # the replaced file's lock; the new one was locked before its rename

    def remove(self, durable: bool = False) -> None:
        os.unlink(self.path)
        if durable:
            _platform.fsync_folder(self.folder)

    def unlock(self) -> None:
        """Drop the flock (closing the descriptor releases it; done last: R4)."""
        _held.discard(self)
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __repr__(self) -> str:
        return f"Batch({self.path!r})"


#: The batches this process holds. A forked child closes its copies of their descriptors, or the
#: parent's flock would live on in the child (R5) whoever holds the batch: a producer, a consumer,
#: recovery, or a hand-back under way in another thread at the fork.
_held: "weakref.WeakSet[Batch]" = weakref.WeakSet()


def _let_go_after_fork() -> None:
    for batch in list(_held):
        batch.unlock()


os.register_at_fork(after_in_child=_let_go_after_fork)


def create(folder: str, epoch: Optional[int] = None, content: bytes = b"", state: str = LOADING,
           durable: bool = False) -> Batch:
    """A new ``loading_`` file, locked before it can be seen under that name.

    ``epoch`` (default: now) names its place in line: a converted old batch keeps its own.
    ``content`` is written while the file is still hidden: a process that dies meanwhile leaves
    a ``.creating_`` file, which recovery removes. ``state`` READY: ``content`` is a whole batch,
    handed over at once (fsynced first if ``durable``, and the folder after).
    """
    name, fd = _hidden(folder, epoch, content, state, durable=durable)
    if durable and state != LOADING:
        _platform.fsync_folder(folder)
    return Batch(folder, name, fd)


def _hidden(folder: str, epoch: Optional[int], content: bytes, state: str = LOADING, target: str = "",
            durable: bool = False) -> Tuple[BatchName, int]:
    """Write ``content`` into a new ``.creating_`` file, lock it, and rename it to its name in
    ``state`` or to ``target``: the name and the locked descriptor."""
    while True:
        name = BatchName(state, int(time.time()) if epoch is None else epoch, new_uid())
        hidden = os.path.join(folder, CREATING + name.filename[len(state) + 1:])
        fd = os.open(hidden, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, _platform.FILE_MODE)
        if not _platform.try_lock(fd):  # recovery took it between open and lock: it will remove it
            os.close(fd)
            continue
        try:
            written = 0
            while written < len(content):
                written += os.write(fd, content[written:])
            if durable:
                os.fsync(fd)
            os.rename(hidden, target or os.path.join(folder, name.filename))
        except FileNotFoundError:  # recovery removed it as an orphan before we locked it
            os.close(fd)
            continue
        except BaseException:
            try:  # the rename failed (EIO, ENOSPC...): do not leave the hidden file behind
                os.unlink(hidden)
            except OSError:
                pass  # recovery removes an orphaned hidden file
            os.close(fd)
            raise
        return name, fd


def new_uid() -> str:
    """A UUIDv7 (RFC 9562, with the sub-millisecond fraction in ``rand_a``): the time it was made
    comes first, so that the batches of one process sort in the order they were made, also those
    its filesystem gives the same ctime (ext4 keeps ctime to a clock tick of a few milliseconds)."""
    global _last_uid_time
    tick = max(time.time_ns() * 4096 // 1_000_000, _last_uid_time + 1)  # in 1/4096 ms
    _last_uid_time = tick
    value = (tick >> 12) << 80 | 0x7 << 76 | (tick & 0xFFF) << 64 | 0b10 << 62 | int.from_bytes(os.urandom(8), "big") >> 2
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_last_uid_time = 0


def require_writable(folder: str, who: str) -> None:
    """PermissionError unless this process may create and rename files in ``folder``.

    Checked when a producer or consumer is made, so that a folder it cannot write fails there,
    with a message saying what to do, and not at the first put or get.
    """
    effective = os.access in os.supports_effective_ids
    if not os.access(folder, os.W_OK | os.X_OK, effective_ids=effective):
        code = errno.EROFS if _read_only_mount(folder) else errno.EACCES
        raise PermissionError(
            code,
            f"{who} cannot create or rename files in the queue folder (uid {os.geteuid()}, gid {os.getegid()}"
            f"{', read-only filesystem' if code == errno.EROFS else ''}); a producer or consumer needs write "
            f"and search permission on it. For a folder shared by several users, give it to a common group "
            f"(chgrp, chmod g+ws) and run them with umask 002",
            folder,
        )


def _read_only_mount(folder: str) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def ready_in_order(folder: str) -> List[str]:
    """Names of the ``ready_`` files, in hand-over order (epoch, then the ctime the rename set,
    then the uuid: one process's in the order it made them, see ``new_uid``).

    Each file's order key is looked up once (a stat per new file, not per file per call: with a
    backlog of many files every claim would otherwise stat them all); see ``_order_keys``.
    """
    seen = _order_keys.setdefault(folder, {})
    keys: Dict[str, Tuple[int, int, str]] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name
            if not name.startswith("ready_"):
                continue
            key = seen.get(name)
            if key is None:
                parsed = parse_name(name)
                if parsed is None:
                    continue
                try:
                    key = (parsed.epoch, os.lstat(os.path.join(folder, name)).st_ctime_ns, parsed.uid)
                except FileNotFoundError:
                    continue  # claimed meanwhile
            keys[name] = key
    _order_keys[folder] = keys  # forget the files that are gone
    return sorted(keys, key=keys.__getitem__)


#: folder -> {ready_ file name -> (epoch, ctime, uuid)} as last seen by this process. A batch handed
#: back under its old name between two looks keeps its earlier key: it is the older one anyway.
_order_keys: Dict[str, Dict[str, Tuple[int, int, str]]] = {}


def count_ready(folder: str) -> int:
    with os.scandir(folder) as entries:
        return sum(1 for entry in entries if entry.name.startswith("ready_"))


def take(folder: str, filename: str, from_state: str, to_state: str) -> Optional[Batch]:
    """Lock ``filename`` and rename it to ``to_state``; None if another process got there first.

    The lock is taken before the rename (so the file is never ours without it), and the file is
    checked to still be the one that was locked: losing is normal, not an error. ``Held`` if
    another process holds the lock.
    """
    path = os.path.join(folder, filename)
    name = parse_name(filename)
    if name is None or name.state != from_state:
        raise ValueError(f"{filename!r} is not a {from_state}_ batch file name")
    try:
        # O_NONBLOCK: a FIFO planted under a batch name must not hang the open
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symlink planted in place of a batch: never followed
            raise SymlinkRefused(path) from None
        if exc.errno in _CANNOT_OPEN:  # a file this user may not read, a socket: not a batch we can take
            reason = f"cannot open it ({exc.strerror}), so it is not a batch this process can take"
            raise EntryRefused(exc.errno, reason, path) from None
        raise
    batch = Batch(folder, name, fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            batch.unlock()
            return None
        if not _platform.try_lock(fd):
            batch.unlock()
            raise Held(path)
        try:
            now = os.lstat(path)
            if (now.st_ino, now.st_dev) != (info.st_ino, info.st_dev):
                batch.unlock()  # renamed away and back by its owner: not the file we locked
                return None
            if to_state != from_state:
                batch.move(to_state)
        except FileNotFoundError:
            batch.unlock()
            return None
        return batch
    except BaseException:
        batch.unlock()
        raise


#: Errors of opening an entry named like a batch that say it is not one this process can take:
#: EACCES/EPERM (a file of another user it may not read), ENXIO (a Unix socket), ENODEV (a device).
_CANNOT_OPEN = frozenset({errno.EACCES, errno.EPERM, errno.ENXIO, errno.ENODEV})


class EntryRefused(OSError):
    """An entry named like a batch that this process cannot open; left as it is (``filename`` says which)."""


class SymlinkRefused(EntryRefused):
    """A symlink sits where a batch file should be; turbo_queue never follows it."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.ELOOP, "a symlink in place of a batch file is never followed", path)


class Held(Exception):
    """Another process holds the lock of a batch file (``args[0]`` is its path).

    A live owner of a ``loading_`` or ``chosen_`` file holds it. A ``ready_`` file is held for an
    instant after its rename by the process that handed it over (which lets go once the rename is
    done: no event says when), or by a consumer between its lock and its rename to ``chosen_``.
    """


def claim(folder: str, skip: FrozenSet[str] = frozenset()) -> Optional[Batch]:
    """Claim the oldest ``ready_`` file this process can get (``chosen_``), or None if there is none.

    The oldest is tried first, so one consumer sees batches in hand-over order; after losing a
    race a consumer picks at random among the next few, so that many consumers spread out.
    ``Held`` if ready_ files were there but all held by other processes: look again soon.
    """
    names = [name for name in ready_in_order(folder) if name not in skip]
    index = 0
    held: Optional[Held] = None
    while index < len(names):
        try:
            batch = take(folder, names[index], READY, CHOSEN)
        except Held as exc:
            held = exc
        else:
            if batch is not None:
                return batch
        del names[index]
        index = random.randrange(min(_SPREAD, len(names))) if names else 0
    if held is not None:
        raise held
    return None
