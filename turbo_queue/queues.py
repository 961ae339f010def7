"""``Queue``, ``JoinableQueue`` and ``SimpleQueue``: drop-in replacements for ``multiprocessing``'s.

Each is a queue folder with a process-local ``Enqueuer`` and ``Dequeuer``, created on first use in
each process, and the shared counters of ``_counters`` for ``qsize``/``maxsize``/``join``.
"""

from __future__ import annotations

import errno
import multiprocessing.util
import os
import shutil
import tempfile
import threading
import time
from queue import Empty, Full
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, TypeVar, Union

from . import _counters, _folder, _lifecycle, _platform
from ._checks import check_timeout, positive_int, positive_number, true_or_false
from ._codecs import CHUNK_BYTES
from ._counters import DONE
from .consumer import Dequeuer
from .producer import Enqueuer

PathLike = Union[str, "os.PathLike[str]"]

#: A put waiting for room under ``maxsize`` (or ``join()``) looks again after this long, at most.
_MAX_POLL = 0.01
#: How long, at most, a non-blocking get waits for items that ``qsize()`` counts and that are not
#: handed over yet (see ``_get_counted``): a second, or 0.1 s plus twice ``max_batch_delay`` if less.
_COUNTED_WAIT = 1.0

_T = TypeVar("_T")


def _remove_folder(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


#: An anonymous queue's folder is ``<fast temp root>/turbo_queue-<random>``, holding ``.users``:
#: every process that uses the queue holds a shared flock on it, on a descriptor of its own.
ANONYMOUS_PREFIX = "turbo_queue-"
USERS = ".users"


def _hold_users(path: str) -> int:
    """A descriptor holding a shared flock on the anonymous folder's ``.users``.

    ``FileNotFoundError`` if the folder was removed as stale (its creator and every user gone).
    """
    users = os.path.join(path, USERS)
    gone = FileNotFoundError(errno.ENOENT, "the anonymous queue's folder is gone: every process that used it "
                             "exited or closed it. Give the queue a path= to keep it without users", path)
    try:
        fd = os.open(users, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise gone from None
    try:
        _platform.lock_shared(fd)
        try:
            here, now = os.fstat(fd), os.stat(users)
        except FileNotFoundError:
            raise gone from None  # removed as stale between our open and our lock
        if (here.st_ino, here.st_dev) != (now.st_ino, now.st_dev):
            raise gone
    except BaseException:
        os.close(fd)
        raise
    return fd


def _make_anonymous() -> Tuple[str, int]:
    """A new anonymous queue folder, and the descriptor of its creator's shared lock.

    ``.users`` gets its name only once locked, so that no one ever sees it unlocked while its
    creator lives.
    """
    path = tempfile.mkdtemp(prefix=ANONYMOUS_PREFIX, dir=_platform.fast_temp_root())
    making = os.path.join(path, USERS + ".making")
    fd = os.open(making, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _platform.FILE_MODE)
    try:
        _platform.lock_shared(fd)
        os.rename(making, os.path.join(path, USERS))
    except BaseException:
        os.close(fd)
        raise
    return path, fd


def remove_stale_anonymous(root: Optional[str] = None) -> List[str]:
    """Remove the folders of anonymous queues (``Queue()`` without ``path``) that nobody uses.

    A folder is stale when its ``.users`` lock is free: its creator and every process that got
    the queue from it (by pickling or fork) exited or were killed. Folders of live queues, and
    folders without ``.users`` (made by an older turbo_queue, or not by it), are left alone.
    ``root`` defaults to where anonymous queues live (``/dev/shm``). Returns the removed paths.
    """
    root = root or _platform.fast_temp_root()
    removed: List[str] = []
    try:
        names = [name for name in os.listdir(root) if name.startswith(ANONYMOUS_PREFIX)]
    except OSError:
        return removed
    for name in names:
        path = os.path.join(root, name)
        try:
            fd = os.open(os.path.join(path, USERS), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            if _abandoned_while_made(path):
                removed.append(path)
            continue  # else: being made, or made by an older turbo_queue (not ours to judge)
        except OSError:
            continue  # not ours to read
        try:
            if _platform.try_lock(fd):  # nobody holds it: nobody can come back to this folder
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        finally:
            os.close(fd)
    return removed


def _abandoned_while_made(path: str) -> bool:
    """Remove a folder whose creator died inside ``_make_anonymous``, before ``.users`` had its name.

    Only a folder untouched for ``_MAKING_GRACE`` seconds that holds nothing but an unlocked
    ``.users.making`` (which nothing else makes): a creator alive there would have renamed it
    within microseconds. An empty folder is left alone: it may be anybody's. True if removed.
    """
    try:
        if time.time() - os.lstat(path).st_mtime < _MAKING_GRACE:
            return False
        names = os.listdir(path)
    except OSError:
        return False
    if names != [USERS + ".making"]:
        return False
    try:
        fd = os.open(os.path.join(path, names[0]), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not _platform.try_lock(fd):
            return False
        shutil.rmtree(path, ignore_errors=True)
        return True
    finally:
        os.close(fd)


#: How long a folder being made may go without its ``.users`` before it counts as abandoned.
_MAKING_GRACE = 60.0

_swept = False  # this process removed the stale anonymous folders already (see Queue.__init__)


class Queue:
    """A process-shared FIFO queue with the interface of ``multiprocessing.Queue``.

    ``Queue(maxsize=0)`` makes a temporary folder in memory (``/dev/shm`` when there is one),
    removed when the creating process exits; ``Queue(path=...)`` uses a named folder that separate
    programs can share and that outlives them. The other keyword arguments are those of
    ``Enqueuer`` and ``Dequeuer``, validated here (``ValueError`` naming the setting);
    ``max_batch_delay`` (default 25 ms) bounds how long an item waits before consumers can see it
    while none waits. ``create=False`` (with ``path``): ``FileNotFoundError`` unless the folder
    exists. A path that is a file: ``NotADirectoryError``; a folder this process cannot write:
    ``PermissionError`` saying what to do.
    """

    def __init__(
        self,
        maxsize: int = 0,
        *,
        path: Optional[PathLike] = None,
        batch_size: int = 10_000,
        max_batch_delay: float = 0.025,
        chunk_size: int = 100,
        chunk_bytes: int = CHUNK_BYTES,
        codec: str = "pickle",
        durable: bool = False,
        max_ready_files: Optional[int] = None,
        ack_every: int = 1000,
        recover_every: float = 30.0,
        max_crashes: int = 3,
        allow_network_fs: bool = False,
        create: bool = True,
    ) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int, got {type(maxsize).__name__}")
        for name, flag in (("durable", durable), ("allow_network_fs", allow_network_fs), ("create", create)):
            true_or_false(name, flag)
        self._settings: Dict[str, Any] = {
            "batch_size": batch_size, "max_batch_delay": max_batch_delay, "chunk_size": chunk_size,
            "chunk_bytes": chunk_bytes, "codec": codec, "durable": durable, "allow_network_fs": allow_network_fs,
            "max_ready_files": max_ready_files,
        }
        Enqueuer.check_settings(**self._settings)
        self._consumer_settings: Dict[str, Any] = {
            "ack_every": positive_int("ack_every", ack_every),
            "recover_every": positive_number("recover_every", recover_every),
            "max_crashes": positive_int("max_crashes", max_crashes),
        }
        self.maxsize = maxsize if maxsize > 0 else 0
        if path is None:
            if not create:
                raise ValueError("create=False needs a path: a Queue without one is always a new folder")
            _platform.require_flock()
            global _swept
            if not _swept:  # what killed queues left behind goes, once per process
                _swept = True
                remove_stale_anonymous()
            self.path, self._users = _make_anonymous()
            multiprocessing.util.Finalize(None, _remove_folder, args=(self.path,), exitpriority=-10)
            self._temporary = True
        else:
            self.path = os.path.abspath(os.fspath(path))
            self._temporary = False
            self._users = -1
            _platform.check_path(self.path, create)
        self._start()

    def _start(self) -> None:
        self._closed = False
        self._lock = threading.Lock()
        self._enqueuer: Optional[Enqueuer] = None
        self._dequeuer: Optional[Dequeuer] = None
        self._counters: Optional[_counters.Counters] = None  # this object's, in this process
        self._totals = _counters.Totals(self.path)
        if not self._temporary:
            _platform.prepare_folder(self.path, self._settings["allow_network_fs"])
        _folder.require_writable(self.path, "a Queue")
        _platform.make_folder(os.path.join(self.path, _counters.FOLDER))
        _lifecycle.track(self)

    # -- pickling: the address and settings, never open files ---------------------------------

    def __getstate__(self) -> Dict[str, Any]:
        return {"path": self.path, "maxsize": self.maxsize, "settings": self._settings,
                "consumer_settings": self._consumer_settings, "temporary": self._temporary}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.path = state["path"]
        self.maxsize = state["maxsize"]
        self._settings = state["settings"]
        self._consumer_settings = state["consumer_settings"]
        self._temporary = state["temporary"]
        self._users = _hold_users(self.path) if self._temporary else -1
        self._start()

    # -- the multiprocessing.Queue interface ---------------------------------------------------

    def put(self, obj: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Put ``obj`` into the queue; with ``maxsize``, wait for room (``queue.Full`` on time-out)."""
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")
        enqueuer = self._enqueuer or self._open_enqueuer()
        if self.maxsize:
            self._put_bounded(enqueuer, [obj], block, timeout)
        else:
            enqueuer.put(obj)  # counts it

    def put_nowait(self, obj: Any) -> None:
        self.put(obj, False)

    def put_many(self, items: Iterable[Any], block: bool = True, timeout: Optional[float] = None) -> None:
        """Put many items in one call (all or none of them): the fast path."""
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")
        items = items if isinstance(items, list) else list(items)
        enqueuer = self._enqueuer or self._open_enqueuer()
        if self.maxsize:
            self._put_bounded(enqueuer, items, block, timeout)
        else:
            enqueuer.put_many(items)

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Remove and return an item; ``queue.Empty`` if none comes in time."""
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")
        dequeuer = self._dequeuer or self._open_dequeuer()
        if block and not self._own_pending():  # one look at the folder, not a look that fails and a second one
            check_timeout(timeout)
            return dequeuer.get(True, timeout)
        try:
            return dequeuer.get(False)  # counts it
        except Empty:
            check_timeout(timeout if block else None)
            self._flush_own()
            if not block:  # the timeout counts only when blocking, as in queue.Queue
                return self._get_counted(lambda wait: dequeuer.get(True, wait))
            return dequeuer.get(True, timeout)

    def get_nowait(self) -> Any:
        return self.get(False)

    def get_many(self, max_items: int, block: bool = True, timeout: Optional[float] = None) -> List[Any]:
        """Up to ``max_items`` items (at least one); ``queue.Empty`` as ``get`` does."""
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")
        dequeuer = self._dequeuer or self._open_dequeuer()
        if block and not self._own_pending():  # as in get()
            check_timeout(timeout)
            return dequeuer.get_many(max_items, True, timeout)
        try:
            return dequeuer.get_many(max_items, False)
        except Empty:
            check_timeout(timeout if block else None)
            self._flush_own()
            if not block:  # the timeout counts only when blocking, as in queue.Queue
                return self._get_counted(lambda wait: dequeuer.get_many(max_items, True, wait))
            return dequeuer.get_many(max_items, True, timeout)

    def peek(self, n: int = 1) -> List[Any]:
        """The first ``n`` items waiting, in the order ``get()`` here would return them, left untouched.

        This process's partial batch is handed over first (as a ``get()`` that finds nothing does);
        then see ``Dequeuer.peek``: what this process's consumer holds, then the ``ready_`` batches
        in hand-over order. Fewer than ``n`` when fewer wait; another process may take any of them.
        """
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")
        self._flush_own()
        return (self._dequeuer or self._open_dequeuer()).peek(n)

    def clear(self) -> int:
        """Remove every item waiting in the queue; how many were removed (see README, "clear").

        This process's partial batch is handed over and removed with the rest; then see
        ``Dequeuer.clear``: every ``ready_`` batch (and dead processes' batches) is removed, and what
        this process's consumer holds and has not returned. Batches held by other live processes
        are theirs: a producer's items not handed over yet arrive later, another consumer's claimed
        batch is delivered by it. ``qsize()`` drops by the count, and ``join()`` waits for none of them.
        """
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")
        self._flush_own()
        removed = (self._dequeuer or self._open_dequeuer()).clear()  # counts them as got
        if removed:
            self._own_counters().add(DONE, removed)  # nobody will call task_done() for them
        return removed

    def qsize(self) -> int:
        """Items put and not yet got, over every process that uses the queue (approximate after a crash)."""
        put, got, _ = self._totals.read()
        return max(0, put - got)

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        return bool(self.maxsize) and self.qsize() >= self.maxsize

    def flush(self) -> None:
        """Hand this process's partial batch to consumers now."""
        if self._enqueuer is not None:
            self._enqueuer.flush()

    def close(self) -> None:
        """This process puts and gets no more: flush the partial batch, hand back unread items."""
        if self._closed:
            return
        self._closed = True
        _lifecycle.untrack(self)
        with self._lock:
            try:
                if self._enqueuer is not None:
                    self._enqueuer.close()
            finally:
                try:
                    if self._dequeuer is not None:
                        self._dequeuer.close()
                finally:
                    if self._counters is not None:  # its counts go into the folder's total
                        self._counters.retire()
                    self._let_go_of_users()

    def join_thread(self) -> None:
        """Kept for the interface: ``close()`` has already flushed everything (no feeder thread)."""
        if not self._closed:
            raise AssertionError(f"Queue {self!r} not closed")

    def cancel_join_thread(self) -> None:
        """Kept for the interface; buffered items are still flushed at exit, so nothing is lost."""

    def __enter__(self) -> "Queue":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} at {self.path!r}{' closed' if self._closed else ''}>"

    # -- inside --------------------------------------------------------------------------------

    def _own_counters(self) -> _counters.Counters:
        if self._counters is None:
            self._counters = _counters.Counters(self.path)
        return self._counters

    def _open_enqueuer(self) -> Enqueuer:
        with self._lock:
            if self._enqueuer is None:
                self._enqueuer = Enqueuer(self.path, counters=self._own_counters(), **self._settings)
            return self._enqueuer

    def _open_dequeuer(self) -> Dequeuer:
        with self._lock:
            if self._dequeuer is None:
                self._dequeuer = Dequeuer(self.path, durable=self._settings["durable"],
                                          allow_network_fs=self._settings["allow_network_fs"],
                                          counters=self._own_counters(), **self._consumer_settings)
            return self._dequeuer

    def _own_pending(self) -> bool:
        """Whether this process's producer holds items not handed over yet (``get`` flushes them first)."""
        return self._enqueuer is not None and self._enqueuer.pending > 0

    def _flush_own(self) -> None:
        # Items this process put are still in its batch: hand them over rather than wait for the timer.
        enqueuer = self._enqueuer
        if enqueuer is not None and enqueuer.pending:
            enqueuer.flush()

    def _get_counted(self, get: Callable[[float], _T]) -> _T:
        """A non-blocking get that found nothing to claim, while ``qsize()`` may count items.

        Counted items that no consumer can claim are in a producer's batch not handed over yet:
        a lone item of a producer that is not streaming is on its way at once, and any batch rolls
        within ``max_batch_delay``. Wait for them while any are counted, for a bounded time, so
        that ``if not q.empty(): q.get_nowait()`` gets the item; ``Empty`` once none are counted
        (another consumer got them) or the time is up (a producer died holding them, or another
        consumer holds them in its batch).
        """
        deadline = time.monotonic() + min(_COUNTED_WAIT, 0.1 + 2 * self._settings["max_batch_delay"])
        while self.qsize() > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                return get(min(remaining, _MAX_POLL))
            except Empty:
                continue
        raise Empty

    def _put_bounded(self, enqueuer: Enqueuer, items: List[Any], block: bool, timeout: Optional[float]) -> None:
        check_timeout(timeout if block else None)
        n = len(items)
        if n > self.maxsize:
            raise ValueError(f"cannot put {n} items at once into a queue of maxsize {self.maxsize}")
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.0005
        while True:
            with self._room():
                put, got, _ = self._totals.read()
                if put - got + n <= self.maxsize:
                    if n == 1:
                        enqueuer.put(items[0])  # counts it
                    else:
                        enqueuer.put_many(items)
                    return
            if not block or (deadline is not None and time.monotonic() >= deadline):
                raise Full
            wait = pause if deadline is None else min(pause, max(0.0, deadline - time.monotonic()))
            time.sleep(wait)
            pause = min(pause * 2, _MAX_POLL)

    def _room(self) -> "_FolderLock":
        return _FolderLock(os.path.join(self.path, _counters.FOLDER, ".maxsize.lock"))

    def _close_at_exit(self) -> None:
        self.close()

    def _let_go_of_users(self) -> None:
        if self._users >= 0:
            fd, self._users = self._users, -1
            os.close(fd)

    def _forget_after_fork(self) -> None:
        # The inherited Enqueuer/Dequeuer reset themselves; the child starts its own on first use.
        if self._users >= 0:  # the child holds the anonymous folder on a descriptor of its own
            inherited, self._users = self._users, -1
            try:
                self._users = _hold_users(self.path)  # taken before the inherited one goes: never a gap
            except FileNotFoundError:
                pass  # removed already: its use fails at the first put or get
            finally:
                os.close(inherited)  # (the parent's lock stays: the parent still holds its copy)
        self._lock = threading.Lock()
        self._enqueuer = None
        self._dequeuer = None
        self._counters = None  # the parent's: this process gets counters of its own


class _FolderLock:
    """An exclusive flock on a small file, held by one process at a time (for ``maxsize``)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> "_FolderLock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _platform.FILE_MODE)
        _platform.lock(self.fd)
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.close(self.fd)


class JoinableQueue(Queue):
    """A ``Queue`` with ``task_done()`` and ``join()``, across processes."""

    def task_done(self) -> None:
        """Mark one item got from the queue as processed."""
        with self._room():
            put, _, done = self._totals.read()
            if done >= put:
                raise ValueError("task_done() called too many times")
            self._own_counters().add(DONE)

    def join(self) -> None:
        """Wait until every item put has been marked done with ``task_done()``."""
        pause = 0.0005
        while True:
            put, _, done = self._totals.read()
            if done >= put:
                return
            self._flush_own()
            time.sleep(pause)
            pause = min(pause * 2, _MAX_POLL)


class SimpleQueue:
    """The interface of ``multiprocessing.SimpleQueue``: ``put``, ``get``, ``empty``, ``close``."""

    def __init__(self, *, path: Optional[PathLike] = None, **settings: Any) -> None:
        self._queue = Queue(path=path, **settings)

    def put(self, obj: Any) -> None:
        self._queue.put(obj)

    def get(self) -> Any:
        return self._queue.get()

    def empty(self) -> bool:
        return self._queue.empty()

    def close(self) -> None:
        self._queue.close()

    @property
    def path(self) -> str:
        return self._queue.path

    def __repr__(self) -> str:
        return f"<SimpleQueue at {self.path!r}>"
