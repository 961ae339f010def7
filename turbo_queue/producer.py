"""``Enqueuer``: a producer on one queue folder (batching, the roll timer, backpressure)."""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time
from typing import Any, Dict, Iterable, List, Optional, Union

from . import _folder, _lifecycle, _platform, _watch
from ._checks import check_timeout, positive_int, positive_number, true_or_false
from ._codecs import CHUNK_BYTES, encode_chunks, get_codec
from ._counters import PUT, Counters
from ._errors import BatchWriteError
from ._batchfile import BatchWriter, fits_in_memory, whole_batch

log = logging.getLogger("turbo_queue")

PathLike = Union[str, "os.PathLike[str]"]


#: While ready_ files wait, a batch keeps filling past max_batch_delay, up to this many times it.
_PATIENCE = 10


class Enqueuer:
    """Puts items into the queue folder ``folder``, in batches.

    A batch is a ``loading_`` file that only this producer writes. It is rolled to ``ready_``
    (handed over to consumers) when it holds ``batch_size`` items, when its oldest item has waited
    ``max_batch_delay`` seconds (a timer thread does this even when no more items come), and on
    ``flush()``, ``close()`` and normal process exit. A lone item goes at once: a ``put()`` that
    starts a batch hands it over before it returns when a consumer has claimed this producer's
    previous batch: a producer whose last batch was taken before its next item came is not
    streaming, and nobody gains by holding that item (Nagle's rule; see docs/protocol.md). While other ``ready_`` files wait (consumers
    are busy), the timer lets the batch fill for up to ten times ``max_batch_delay``: small files
    would only add work for busy consumers. Items are encoded at ``put`` time, so an item
    the codec cannot take raises ``TypeError`` there.

    With ``max_ready_files`` set, a put that would roll a batch while that many ``ready_`` files
    wait blocks until consumers take some (``queue.Full`` when ``block`` is false or ``timeout``
    passes). ``durable=True`` fsyncs each batch file before its rename and the folder after it,
    so a handed-over batch survives power loss; the default survives any process crash.
    """

    def __init__(
        self,
        folder: PathLike,
        *,
        batch_size: int = 10_000,
        max_batch_delay: float = 0.05,
        chunk_size: int = 100,
        chunk_bytes: int = CHUNK_BYTES,
        codec: str = "pickle",
        max_ready_files: Optional[int] = None,
        durable: bool = False,
        allow_network_fs: bool = False,
        counters: Optional[Counters] = None,
    ) -> None:
        self.folder = os.path.abspath(os.fspath(folder))
        self._counters = counters  # where Queue counts items at put() time
        self.check_settings(batch_size=batch_size, max_batch_delay=max_batch_delay, chunk_size=chunk_size,
                            chunk_bytes=chunk_bytes, codec=codec, max_ready_files=max_ready_files)
        self.batch_size = batch_size
        self.max_batch_delay = float(max_batch_delay)
        self.chunk_size = chunk_size
        self.chunk_bytes = chunk_bytes
        self.max_ready_files = max_ready_files
        self.durable = true_or_false("durable", durable)
        self.allow_network_fs = true_or_false("allow_network_fs", allow_network_fs)
        self._codec = get_codec(codec)
        self.codec = self._codec.name
        _platform.prepare_folder(self.folder, self.allow_network_fs)
        _folder.require_writable(self.folder, "an Enqueuer")
        self._closed = False
        self._reset()
        _lifecycle.track(self)

    @staticmethod
    def check_settings(
        *, batch_size: int = 1, max_batch_delay: float = 1.0, chunk_size: int = 1, chunk_bytes: int = 1,
        codec: str = "pickle", max_ready_files: Optional[int] = None, **_other: object,
    ) -> None:
        """ValueError naming the first setting that is wrong."""
        positive_int("batch_size", batch_size)
        positive_number("max_batch_delay", max_batch_delay)
        positive_int("chunk_size", chunk_size)
        positive_int("chunk_bytes", chunk_bytes)
        get_codec(codec)
        if max_ready_files is not None:
            positive_int("max_ready_files", max_ready_files)

    def _reset(self) -> None:
        self._counts = None if self._counters is None else self._counters.view
        self._lock = threading.Lock()  # taken directly on the per-item path (cheaper than the Condition)
        self._cond = threading.Condition(self._lock)  # the timer waits on it
        self._encode = self._codec.encode
        self._pending: List[bytes] = []  # encoded items not yet written to the batch file
        self._pending_bytes = 0  # their size
        self._batch: Optional[_folder.Batch] = None
        self._writer: Optional[BatchWriter] = None
        self._batch_items = 0  # items in this batch, pending ones included
        self._deadline: Optional[float] = None  # when the batch must roll
        self._handed_over: Optional[str] = None  # the ready_ path of the last batch rolled, until claimed
        self._last_call: float = float("-inf")  # when the timer must roll, whatever waits (see _run_timer)
        self._timer: Optional[threading.Thread] = None
        self._timer_idle = False  # the timer sleeps until a batch begins: the next one must wake it
        self._error: Optional[BaseException] = None  # a failure of the timer, raised at the next call

    # -- the public calls ------------------------------------------------------------------

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Add one item to the current batch."""
        data = self._encode(item)
        size = len(data)
        with self._lock:
            if self._closed or self._error is not None:
                self._refuse()
            if self.max_ready_files is not None and self._batch_items + 1 >= self.batch_size:
                self._wait_for_room(block, timeout)
            if self._pending_bytes + size > self.chunk_bytes and self._pending:
                self._write_pending()  # the item would take the chunk past chunk_bytes: it starts the next
            self._pending.append(data)
            self._pending_bytes += size
            self._batch_items += 1
            if self._counts is not None:
                self._counts[PUT] += 1
            if self._batch_items == 1:
                if self._alone():
                    self._roll()
                    return
                self._start_clock()
            if len(self._pending) >= self.chunk_size or self._pending_bytes >= self.chunk_bytes:
                self._write_pending()
            if self._batch_items >= self.batch_size:
                self._roll()

    def put_many(self, items: Iterable[Any], block: bool = True, timeout: Optional[float] = None) -> None:
        """Add many items at once: all of them, or (on an error) none of them.

        The fast path: the items are encoded together, ``chunk_size`` at a time (fewer when that
        would take a chunk past ``chunk_bytes``).
        """
        items = items if isinstance(items, list) else list(items)
        if not items:
            return
        chunks = encode_chunks(self._codec, items, self.chunk_size, self.chunk_bytes)
        with self._lock:
            if self._closed or self._error is not None:
                self._refuse()
            if self.max_ready_files is not None and self._batch_items + len(items) >= self.batch_size:
                self._wait_for_room(block, timeout)
            if self._pending:
                self._write_pending()
            for n, data in chunks:
                self._write(n, data)
                self._batch_items += n
                if self._counts is not None:
                    self._counts[PUT] += n
                if self._batch_items == n:
                    self._start_clock()
                if self._batch_items >= self.batch_size:
                    self._roll()

    def flush(self) -> None:
        """Hand over the current batch now (whatever ``max_ready_files`` says)."""
        with self._lock:
            if self._error is not None:
                self._refuse()
            self._roll()

    def close(self) -> None:
        """Flush the partial batch and stop the timer. Further puts raise ``ValueError``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
            _lifecycle.untrack(self)
            timer = self._timer
            error, self._error = self._error, None
            try:
                self._roll()
            finally:
                self._timer = None
        if timer is not None and timer is not threading.current_thread():
            timer.join()
        if error is not None:
            raise error

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        """Items in the current batch, not yet handed over."""
        return self._batch_items

    @property
    def active(self) -> bool:
        """Whether consumers keep up: fewer than ``max_ready_files`` batches wait (always, without a limit)."""
        return self.max_ready_files is None or _folder.count_ready(self.folder) < self.max_ready_files

    def __enter__(self) -> "Enqueuer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self._batch_items} items in the current batch"
        return f"<Enqueuer {self.folder!r} codec={self.codec} {state}>"

    def __getstate__(self) -> Dict[str, Any]:
        # A copy for another process carries the address and settings, never files or threads.
        return {
            "folder": self.folder, "batch_size": self.batch_size, "max_batch_delay": self.max_batch_delay,
            "chunk_size": self.chunk_size, "chunk_bytes": self.chunk_bytes, "codec": self.codec, "max_ready_files": self.max_ready_files,
            "durable": self.durable, "allow_network_fs": self.allow_network_fs,
        }

    def __setstate__(self, state: Dict[str, Any]) -> None:
        folder = state.pop("folder")
        type(self).__init__(self, folder, **state)

    # -- inside ----------------------------------------------------------------------------

    def _refuse(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        raise ValueError(f"Enqueuer for {self.folder} is closed")

    def _start_clock(self) -> None:
        """A batch begins: arm the timer (and the exit hook, which a new process may lack)."""
        _lifecycle.ensure_exit_hook()
        self._deadline = time.monotonic() + self.max_batch_delay
        self._last_call = self._deadline + (_PATIENCE - 1) * self.max_batch_delay
        if self._timer is None:
            self._timer = threading.Thread(target=self._run_timer, name="turbo_queue-roll-timer", daemon=True)
            self._timer.start()
        elif self._timer_idle:
            self._cond.notify()

    def _alone(self) -> bool:
        """Whether a lone item that starts a batch goes at once (Nagle's rule, docs/protocol.md step 3).

        It does when a consumer has claimed this producer's previous batch (it is no longer
        ``ready_``): the producer is not outrunning its consumers, so holding the item would only
        make it wait. A streaming producer's previous batch is still waiting when its next item
        comes (a claim takes longer than a put), and a new producer has no previous batch: their
        batches fill as before. Under ``max_ready_files`` the item goes at once only while there
        is room.
        """
        if self._handed_over is None or os.path.lexists(self._handed_over):
            return False
        self._handed_over = None  # one lone item per claim: the next waits until this one's batch is claimed
        return self.max_ready_files is None or _folder.count_ready(self.folder) < self.max_ready_files

    def _write_pending(self) -> None:
        pending, self._pending = self._pending, []
        self._pending_bytes = 0
        self._write(len(pending), self._codec.join(pending))

    def _write(self, n: int, data: bytes) -> None:
        try:
            if self._writer is None:  # the file stays empty while the batch is held in memory
                self._batch = _folder.create(self.folder)
                self._writer = BatchWriter(self._batch.path, self._codec, self.durable, in_memory=True)
            self._writer.append(n, data)
        except (sqlite3.Error, OSError) as exc:
            raise self._fail(exc, "writing") from exc

    def _roll(self) -> None:
        """Hand the batch over (docs/protocol.md step 3): put its whole file in place (fsync if
        durable), rename to ready_ (fsync the folder if durable), unlock."""
        if self._batch_items == 0:
            return
        in_memory = self._writer is None and fits_in_memory(self._pending_bytes)
        if self._pending and not in_memory:
            self._write_pending()
        try:
            if in_memory:  # all pending, never written: made whole at once, and no loading_ file
                pending, self._pending = self._pending, []
                whole = whole_batch(self._codec, len(pending), self._codec.join(pending))
                batch = _folder.create(self.folder, content=whole, state=_folder.READY, durable=self.durable)
            else:
                assert self._batch is not None and self._writer is not None
                batch = self._batch
                image = self._writer.finish()
                if image is not None:  # held in memory: its file is written at once
                    batch.rewrite(image, self.durable)
                batch.move(_folder.READY, self.durable)
        except (sqlite3.Error, OSError) as exc:
            raise self._fail(exc, "handing over") from exc
        self._handed_over = batch.path
        batch.unlock()
        self._batch, self._writer = None, None
        self._pending_bytes = self._batch_items = 0
        self._deadline = None

    def _fail(self, exc: BaseException, doing: str) -> BatchWriteError:
        """Drop the batch that hit an I/O error; nothing of it is handed over."""
        lost = self._batch_items  # the pending ones included
        path = self._batch.path if self._batch else self.folder
        if self._counts is not None:
            self._counts[PUT] -= self._batch_items  # they never reach the queue
        if self._writer is not None:
            try:
                self._writer.abandon()
            except sqlite3.Error:
                pass  # closing a connection whose disk failed; the file is removed next
        if self._batch is not None:
            try:
                self._batch.remove()
            except OSError:
                pass  # left for recovery, which finds its lock free and removes it
            else:
                # A failed commit (e.g. EIO deleting the journal) can leave the journal behind. Without
                # its database it is litter that nothing else removes; with the database gone first,
                # removing it can never separate a hot journal from its data (R1).
                for suffix in ("-journal", "-wal", "-shm"):
                    try:
                        os.unlink(self._batch.path + suffix)
                    except OSError:
                        pass  # none: the usual case
            self._batch.unlock()
        self._batch, self._writer, self._pending, self._pending_bytes = None, None, [], 0
        self._batch_items, self._deadline = 0, None
        return BatchWriteError(
            f"{doing} batch {path} failed ({exc}); its {lost} items were not handed over. "
            f"The queue stays usable once the cause (disk full? permissions?) is fixed.",
            lost,
        )

    def _wait_for_room(self, block: bool, timeout: Optional[float]) -> None:
        """Wait until fewer than ``max_ready_files`` batches wait (the lock is released meanwhile)."""
        assert self.max_ready_files is not None
        check_timeout(timeout)
        events = _watch.events(self.folder, departures=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            generation = events.mark()
            if _folder.count_ready(self.folder) < self.max_ready_files:
                return
            remaining = 1.0 if deadline is None else deadline - time.monotonic()
            if not block or remaining <= 0:
                raise queue.Full
            self._lock.release()
            try:
                events.wait(generation, min(remaining, 1.0))
            finally:
                self._lock.acquire()
            if self._closed:
                raise ValueError(f"Enqueuer for {self.folder} is closed")

    def _run_timer(self) -> None:
        """Roll each batch at its deadline. A batch that begins needs no wake-up while the timer
        waits anyway: its deadline is later than any the timer waits for. Without a batch, the
        timer waits ``max_batch_delay`` more (a batch begun meanwhile is seen before its deadline),
        and only then sleeps until ``_start_clock`` wakes it."""
        with self._lock:
            lingering = True
            while not self._closed:
                if self._deadline is None:
                    if lingering:
                        lingering = False
                        self._cond.wait(self.max_batch_delay)
                    else:
                        self._timer_idle = True
                        self._cond.wait()
                        self._timer_idle = False
                    continue
                lingering = True
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                if self._deadline < self._last_call and _folder.count_ready(self.folder):
                    # Consumers are busy (batches wait): a small batch now would only add a file to
                    # read. Keep filling it, for at most _PATIENCE times max_batch_delay in all.
                    self._deadline = min(self._deadline + self.max_batch_delay, self._last_call)
                    continue
                if self.max_ready_files is not None:
                    events = _watch.events(self.folder, departures=True)
                    generation = events.mark()  # before the look: a change after it then ends the wait
                    if _folder.count_ready(self.folder) >= self.max_ready_files:
                        self._lock.release()
                        try:
                            events.wait(generation, 1.0)
                        finally:
                            self._lock.acquire()
                        continue
                try:
                    self._roll()
                except BatchWriteError as exc:
                    log.error("turbo_queue: %s", exc)
                    self._error = exc

    def _close_at_exit(self) -> None:
        self.close()

    def _forget_after_fork(self) -> None:
        # The child must not flush the parent's items, nor close its SQLite connection (_folder
        # closes the child's copy of every batch lock).
        if self._writer is not None:
            _lifecycle.keep_inherited(self._writer.forget())
        self._counters = None  # the parent's: a child counts in counters of its own
        self._reset()
