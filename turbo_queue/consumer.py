"""``Dequeuer``: a consumer on one queue folder (claim, read, acknowledge, hand back)."""

from __future__ import annotations

import itertools
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from typing import Any, Deque, Dict, Iterator, List, NamedTuple, Optional, Set, Union

from . import _aside, _folder, _lifecycle, _platform, _batchfile, _upgrade, _watch
from ._checks import check_timeout, positive_int, positive_number, true_or_false
from ._counters import GOT, Counters
from ._errors import BatchFormatError
from ._batchfile import Chunk, BatchReader
from .recovery import recover

log = logging.getLogger("turbo_queue")

#: How soon a consumer looks again at ready_ files that were all held by other processes: the
#: process that handed a file over lets go of it just after the rename that woke the consumer
#: (after an fsync of the folder, when durable), microseconds later unless the wake-up took its
#: CPU, which is common on a busy machine. A lone item waits this long on its way, so the first
#: look comes soon. The wait doubles while they stay held (a stopped process may hold one), up
#: to the last value.
_HELD_RETRY = (0.0002, 0.1)

PathLike = Union[str, "os.PathLike[str]"]


class _Returned(NamedTuple):
    """A batch whose items were all returned but not all acknowledged (``auto_ack=False``).

    It stays claimed (``chosen_``, under its flock) until ``ack()`` deletes it or ``nack()``/``close()``
    hands it back at ``acked``; a crash leaves it to recovery, at its recorded position.
    """

    batch: _folder.Batch
    reader: BatchReader
    acked: int


class Dequeuer:
    """Takes items from the queue folder ``folder``, a whole batch at a time.

    It claims the oldest ``ready_`` file (renaming it ``chosen_`` under its flock), returns its
    items in order and deletes the file when all are acknowledged. An item counts as acknowledged
    once the consumer asks for more (the next ``get``/``get_many``) or closes, so an item being
    processed when the process dies is delivered again. The acknowledged position is written into
    the file every ``ack_every`` items: a crash re-delivers at most that many items plus the
    chunk in hand. ``close()`` (and normal process exit) hands the unread rest back as ``ready_``.

    While the folder is empty it sleeps until a ``ready_`` file appears (inotify), and every
    ``recover_every`` seconds it runs ``recover()`` so a dead process's batches are not stuck.

    Poison items: a chunk that cannot be decoded, or whose checksum shows that its bytes changed,
    is set aside in a ``bad_`` file of its own and the batch goes on. A batch whose consumer died
    holding it is read carefully (its position recorded at every call, ``get_many`` returning items
    of one chunk only), so that the next crash names the item or its chunk; once ``max_crashes``
    consumers died at the same item, the chunk holding it is set aside too, from that item on.
    Such an item is delivered at most ``max_crashes + 1`` times.

    Explicit acknowledgement (``auto_ack=False``): ``get``/``get_many`` acknowledge nothing;
    ``ack()`` acknowledges every item returned so far and records that in the batch file at once,
    so a crash after it never delivers those items again, and deletes the batches it finished;
    ``nack()`` hands back every returned item not yet acknowledged, to be delivered again (to this
    or another consumer), and so does ``close()``. Several calls may return items, across batch
    boundaries, before one ``ack()``: the batches they came from stay claimed until then. A crash
    delivers again exactly the items not acknowledged.
    """

    def __init__(
        self,
        folder: PathLike,
        *,
        ack_every: int = 1000,
        recover_every: float = 30.0,
        max_crashes: int = 3,
        durable: bool = False,
        allow_network_fs: bool = False,
        auto_ack: bool = True,
        counters: Optional[Counters] = None,
    ) -> None:
        self.folder = os.path.abspath(os.fspath(folder))
        self.auto_ack = true_or_false("auto_ack", auto_ack)
        self._counters = counters  # where Queue counts items at get() time
        self.ack_every = positive_int("ack_every", ack_every)
        self.recover_every = positive_number("recover_every", recover_every)
        self.max_crashes = positive_int("max_crashes", max_crashes)
        self.durable = true_or_false("durable", durable)
        self.allow_network_fs = true_or_false("allow_network_fs", allow_network_fs)
        _platform.prepare_folder(self.folder, self.allow_network_fs)
        _folder.require_writable(self.folder, "a Dequeuer")
        self._closed = False
        self._reset()
        _lifecycle.track(self)

    def _reset(self) -> None:
        self._counts = None if self._counters is None else self._counters.view
        self._lock = threading.Lock()
        self._items: Deque[Any] = deque()  # decoded items not yet returned
        self._batch: Optional[_folder.Batch] = None
        self._reader: Optional[BatchReader] = None
        self._taken = 0  # items of the claimed batch returned so far (its position)
        self._acked = 0  # auto_ack=False: items of the claimed batch acknowledged by ack()
        self._returned: List[_Returned] = []  # auto_ack=False: finished batches awaiting ack()
        self._next = 0  # position of the first item not yet decoded
        self._careful = False  # record the position at every call: a consumer died holding this batch
        self._skip: Set[str] = set()  # ready_ files this consumer cannot read (a newer format)
        self._recovered_at = float("-inf")
        self._unsaved: Optional[str] = None  # the batch whose position could not be recorded (warned once)
        self._held_wait = 0.0  # > 0: the last look found ready_ files all held by others; look again this soon
        self.claimed = 0  # batches claimed so far

    # -- the public calls ------------------------------------------------------------------

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """The next item; ``queue.Empty`` if none comes (at once, or within ``timeout`` seconds)."""
        with self._lock:
            if self._careful and self.auto_ack:
                self._ack_all()
            if not self._items:
                self._fill(block, timeout)
            elif timeout is not None:
                check_timeout(timeout)  # a wrong one fails at every call, also when an item is in hand
            self._taken += 1
            if self._counts is not None:
                self._counts[GOT] += 1
            return self._items.popleft()

    def get_many(self, max_items: int, block: bool = True, timeout: Optional[float] = None) -> List[Any]:
        """Up to ``max_items`` items (at least one), from one batch; ``queue.Empty`` as ``get`` does."""
        positive_int("max_items", max_items)
        with self._lock:
            if self._careful and self.auto_ack:
                self._ack_all()
            if not self._items:
                self._fill(block, timeout)
            elif timeout is not None:
                check_timeout(timeout)
            items = self._items
            # Read carefully, a call returns items of one chunk only: a crash then names the chunk.
            while (len(items) < max_items and not self._careful and self._reader is not None
                   and self._next < self._reader.count):
                if not self._read_chunk():  # more of the batch in hand, without waiting
                    break
            if len(items) <= max_items:
                out = list(items)
                items.clear()
            else:
                popleft = items.popleft
                out = [popleft() for _ in range(max_items)]
            self._taken += len(out)
            if self._counts is not None:
                self._counts[GOT] += len(out)
            return out

    def __iter__(self) -> Iterator[Any]:
        """Items as they come, waiting when there are none, until the Dequeuer is closed."""
        while True:
            try:
                yield self.get(timeout=1.0)
            except queue.Empty:
                continue
            except ValueError:
                if self._closed:
                    return
                raise

    def ack(self) -> None:
        """Acknowledge every item returned so far (``auto_ack=False`` only).

        The position is recorded in the batch file before this returns (one SQLite commit), and
        the batches whose items were all returned are deleted. ``ValueError`` when closed, or for a
        Dequeuer that acknowledges on its own.
        """
        with self._lock:
            self._check_explicit("ack")
            for held in self._returned:
                self._delete(held.batch, held.reader)
            self._returned.clear()
            reader = self._reader
            if reader is None or self._acked == self._taken:
                return
            self._acked = self._taken
            if self._taken >= reader.count:  # all returned: nothing is left to record
                self._finish_batch()
            else:
                self._save_position(reader)

    def nack(self) -> None:
        """Hand back every item returned and not acknowledged (``auto_ack=False`` only).

        They are delivered again, to this or another consumer; what was acknowledged is not.
        ``ValueError`` when closed, or for a Dequeuer that acknowledges on its own.
        """
        with self._lock:
            self._check_explicit("nack")
            self._hand_back_returned()
            if self._reader is not None and self._acked != self._taken:
                self._items.clear()  # decoded items not yet returned are read again from the file
                self._hand_back_claimed()

    def peek(self, n: int = 1) -> List[Any]:
        """The first ``n`` items waiting, in the order this consumer would get them, left untouched.

        First the items of the batch it holds that it has not returned, then the ``ready_`` batches
        in hand-over order, read without a lock (as ``turbo-queue peek`` reads them). Nothing is
        claimed, acknowledged or counted: another consumer may take any of them meanwhile. Items a
        producer has not handed over yet are not waiting; a batch or chunk that cannot be read is
        passed over. Fewer than ``n`` (or none) when fewer wait. ``ValueError`` when closed.
        """
        positive_int("n", n)
        with self._lock:
            if self._closed:
                raise ValueError(f"Dequeuer for {self.folder} is closed")
            items = list(itertools.islice(self._items, n))
            if self._reader is not None:
                items += self._peek_claimed(self._reader, n - len(items))
            for name in _folder.ready_in_order(self.folder):
                if len(items) >= n:
                    break
                items += _peek_ready(os.path.join(self.folder, name), n - len(items))
            return items[:n]

    def clear(self) -> int:
        """Remove every item waiting; how many were removed.

        Removed: the items of the batch this consumer holds that it has not returned, and every
        ``ready_`` batch (dead processes' batches are recovered first, so theirs too). Each batch
        is claimed before it is deleted, so a consumer that claims one first keeps it and delivers
        it. Not removed: batches that live processes hold (a producer's items not handed over yet
        arrive later; another consumer's claimed batch is delivered by it), ``bad_`` files (never
        deleted, R9) and batches in a format this code does not read. ``ValueError`` when closed,
        or with ``auto_ack=False`` while returned items wait for ``ack()``/``nack()``.
        """
        with self._lock:
            if self._closed:
                raise ValueError(f"Dequeuer for {self.folder} is closed")
            if self.unacknowledged:
                raise ValueError(f"clear() would drop the {self.unacknowledged} items returned and not "
                                 f"acknowledged; call ack() or nack() first")
            self._items.clear()
            self._recovered_at = float("-inf")  # recover first: a dead process's batches are waiting too
            removed = 0
            deadline = time.monotonic() + 1.0
            while True:
                if self._reader is not None:
                    removed += self._reader.count - self._taken
                    self._taken = self._acked = self._reader.count
                    self._finish_batch()
                elif not self._claim():
                    if not self._held_wait or time.monotonic() > deadline:
                        break
                    time.sleep(self._held_wait)  # held for an instant by whoever just handed it over
            if self._counts is not None:
                self._counts[GOT] += removed
            return removed

    def _peek_claimed(self, reader: BatchReader, n: int) -> List[Any]:
        """Up to ``n`` items of the claimed batch after those decoded, read without moving its position."""
        items: List[Any] = []
        position = self._next
        while len(items) < n and position < reader.count:
            try:
                chunk = reader.chunk_at(position)
            except sqlite3.DatabaseError:  # a damaged chunk: get() will set it aside
                break
            if chunk is None:
                break
            try:
                decoded = reader.codec.decode(chunk.data)
            except Exception:  # unpickling runs code from the file: any error means "cannot decode"
                decoded = []
            items += decoded[position - chunk.first:]
            position = chunk.first + chunk.n
        return items[:n]

    @property
    def unacknowledged(self) -> int:
        """How many items were returned and not yet acknowledged (0 with ``auto_ack=True``)."""
        if self.auto_ack:
            return 0
        held = sum(one.reader.count - one.acked for one in self._returned)
        return held + (self._taken - self._acked if self._reader is not None else 0)

    def close(self) -> None:
        """Hand the rest of the batch back (``ready_``); with ``auto_ack=True`` acknowledge what was returned.

        With ``auto_ack=False`` the items returned and not acknowledged are handed back too.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._items.clear()
            _lifecycle.untrack(self)
            try:
                self._hand_back_returned()
            finally:
                self._hand_back_claimed()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Dequeuer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        held = self._batch.name.filename if self._batch else "no batch"
        return f"<Dequeuer {self.folder!r} {'closed' if self._closed else held}>"

    def __getstate__(self) -> Dict[str, Any]:
        return {
            "folder": self.folder, "ack_every": self.ack_every, "recover_every": self.recover_every,
            "max_crashes": self.max_crashes, "durable": self.durable, "allow_network_fs": self.allow_network_fs,
            "auto_ack": self.auto_ack,
        }

    def __setstate__(self, state: Dict[str, Any]) -> None:
        folder = state.pop("folder")
        type(self).__init__(self, folder, **state)

    # -- inside ----------------------------------------------------------------------------

    def _fill(self, block: bool, timeout: Optional[float]) -> None:
        """Make ``self._items`` non-empty, waiting as told; raise Empty or ValueError otherwise."""
        check_timeout(timeout)
        if self._closed:
            raise ValueError(f"Dequeuer for {self.folder} is closed")
        if self._items or self._read_claimed():  # more of the batch in hand: no look at the folder
            return
        events = _watch.events(self.folder)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            arrivals = events.mark(arrivals=True)  # before the look: an arrival after it ends the wait
            if self._read_more():
                return
            remaining = self.recover_every if deadline is None else deadline - time.monotonic()
            if not block or remaining <= 0:
                raise queue.Empty
            wait = min(remaining, self.recover_every)
            if self._held_wait:  # ready_ files were all held: no event will say when they are let go
                wait = min(wait, self._held_wait)
            self._lock.release()  # other threads may get, or close, while this one waits
            try:
                events.wait(arrivals, wait, arrivals=True)
            finally:
                self._lock.acquire()
            if self._closed:
                raise ValueError(f"Dequeuer for {self.folder} is closed")
            if self._items:
                return

    def _read_more(self) -> bool:
        """Decode the next chunk of the claimed batch, or claim the next batch; False if none."""
        while True:
            if self._read_claimed():
                return True
            if self._reader is not None:
                self._finish_batch()
            if not self._claim():
                return False

    def _read_claimed(self) -> bool:
        """Decode the next chunk of the claimed batch into ``_items``; False if none is left."""
        while self._reader is not None and self._next < self._reader.count:
            if self._read_chunk():
                return True
        return False

    def _read_chunk(self) -> bool:
        """Decode the next chunk of the claimed batch into ``_items``; False if it was set aside."""
        reader = self._reader
        assert reader is not None
        if self.auto_ack and self._taken - reader.acked >= self.ack_every:
            self._save_position(reader)
        chunk = self._next_chunk(reader)
        if chunk is None:
            return False
        try:
            items = reader.codec.decode(chunk.data)
            if len(items) != chunk.n:
                raise ValueError(f"the chunk holds {len(items)} items, its row says {chunk.n}")
        except Exception as exc:  # unpickling runs code from the file: any error means "cannot decode"
            if self._items:
                return False  # set it aside once the items before it are returned (see _set_aside)
            first, last = chunk.first, chunk.first + chunk.n - 1
            self._set_aside(chunk, f"decoding items {first}..{last} failed ({type(exc).__name__}: {exc})")
            return False
        skip = self._next - chunk.first
        self._items.extend(items[skip:] if skip else items)
        self._next = chunk.first + chunk.n
        return True

    def _next_chunk(self, reader: BatchReader) -> Optional[Chunk]:
        """The chunk holding the next item; None if it was set aside or the batch quarantined."""
        try:
            chunk = reader.chunk_at(self._next)
        except _batchfile.DamagedChunk as exc:
            if not self._items:  # else set it aside once the items before it are returned
                self._set_aside(exc.chunk, "its checksum does not match: its bytes changed on disk")
            return None
        except sqlite3.DatabaseError as exc:
            self._quarantine(f"reading it failed ({exc})")
            return None
        if chunk is None:
            self._quarantine(f"no chunk holds item {self._next} of the {reader.count} it claims")
        return chunk

    def _ack_all(self) -> None:
        """Record the position of a batch read carefully: every item returned is acknowledged."""
        if self._reader is not None and self._taken != self._reader.acked:
            self._save_position(self._reader)

    def _claim(self) -> bool:
        if time.monotonic() - self._recovered_at >= self.recover_every:
            self._recovered_at = time.monotonic()
            recover(self.folder, durable=self.durable)
        while True:
            try:
                batch = _folder.claim(self.folder, frozenset(self._skip))
            except _folder.Held:  # by whoever handed it over, for an instant: no event will say when it lets go
                first, most = _HELD_RETRY
                self._held_wait = min(2 * self._held_wait, most) if self._held_wait else first
                return False
            except _folder.EntryRefused as exc:  # a symlink, a socket, a file of a user we may not read
                log.warning("turbo_queue: %s: %s; left as it is", exc.filename, exc.strerror)
                self._skip.add(os.path.basename(exc.filename))
                continue
            self._held_wait = 0.0
            if batch is None:
                return False
            try:
                reader = BatchReader(batch.path, self.durable, batch.fd)
            except BatchFormatError as exc:
                log.error("turbo_queue: %s", exc)
                batch.move(_folder.READY, self.durable)
                batch.unlock()
                self._skip.add(batch.name.filename)
                continue
            except (sqlite3.DatabaseError, ValueError, TypeError) as exc:
                if _upgrade.is_old_batch(batch.path):  # a ready_ file of turbo-queue 0.5.2 or 0.8.0
                    self._convert(batch)
                    continue
                self._batch = batch
                self._quarantine(f"it is not a readable batch ({type(exc).__name__}: {exc})")
                continue
            _lifecycle.ensure_exit_hook()  # so that exit hands the batch back, in any process
            self._batch, self._reader = batch, reader
            self._taken = self._next = self._acked = reader.acked
            self._careful = reader.crashes > 0
            self.claimed += 1
            if reader.crashes >= self.max_crashes:
                chunk = self._next_chunk(reader)
                if chunk is not None:
                    self._set_aside(chunk, f"{reader.crashes} consumers died holding item {self._next}")
            return True

    def _convert(self, batch: _folder.Batch) -> None:
        """Hand a claimed batch of the old layout over again in the current format."""
        name = batch.name.filename
        try:
            outcome, new = _upgrade.convert(self.folder, batch.path, batch.name.epoch, self.durable)
        except (OSError, sqlite3.Error) as exc:  # a full disk: hand it back for a later look
            log.error("turbo_queue: cannot convert %s, a batch of turbo-queue 0.5.2/0.8.0 (%s)", name, exc)
            batch.move(_folder.READY, self.durable)
            self._skip.add(batch.name.filename)
        else:
            log.warning("turbo_queue: %s, a batch of turbo-queue 0.5.2/0.8.0: %s%s", name, outcome,
                        f" as {new}" if new else "")
        finally:
            batch.unlock()

    def _finish_batch(self) -> None:
        """Every item was returned: delete the file if they were acknowledged, else keep it for ``ack()``."""
        batch, reader = self._batch, self._reader
        assert batch is not None and reader is not None
        self._batch, self._reader = None, None
        if self.auto_ack or self._acked >= reader.count:
            self._delete(batch, reader)
        else:
            self._returned.append(_Returned(batch, reader, self._acked))

    def _delete(self, batch: _folder.Batch, reader: BatchReader) -> None:
        """Delete a batch whose items were all acknowledged, then drop its lock."""
        try:
            reader.close()
            batch.remove(self.durable)
        finally:
            batch.unlock()

    def _check_explicit(self, call: str) -> None:
        if self._closed:
            raise ValueError(f"Dequeuer for {self.folder} is closed")
        if self.auto_ack:
            raise ValueError(f"{call}() is for a Dequeuer made with auto_ack=False; this one acknowledges "
                             f"an item when the next get()/get_many() is called or at close()")

    def _hand_back_returned(self) -> None:
        """Hand back the finished batches awaiting ``ack()``, at their acknowledged positions."""
        while self._returned:
            held = self._returned.pop(0)
            self._hand_back(held.batch, held.reader, held.acked)

    def _set_aside(self, chunk: Chunk, reason: str) -> None:
        """Keep a chunk that cannot be decoded in a ``bad_`` file of its own and go on past it.

        Poison items are then never delivered again, and the rest of the batch still is. Called
        only when every item before the chunk was returned (``_items`` is empty), so moving the
        position past it acknowledges nothing that was not returned. The bad_ file is a batch of
        its own (``set_aside_from`` in its meta names the source): renamed ``ready_`` once the
        consumer can decode it, it delivers those items. If it cannot be written, the whole
        batch is quarantined as before.
        """
        batch, reader = self._batch, self._reader
        assert batch is not None and reader is not None
        source = batch.name.filename
        meta = {"acked": self._next - chunk.first, "set_aside_from": source, "set_aside_first": chunk.first,
                "reason": reason}
        try:
            aside = _aside.write_bad(self.folder, reader.codec, [(chunk.n, chunk.data, chunk.crc)], meta,
                                     self.durable)
        except (sqlite3.Error, OSError) as exc:
            self._quarantine(f"{reason}; setting the chunk aside failed ({exc})")
            return
        log.error("turbo_queue: %s: %s; those %d items are kept in %s for a person to look at",
                  source, reason, chunk.n, aside)
        settled = self._acked == self._next  # auto_ack=False: every item returned was acknowledged
        self._taken = self._next = chunk.first + chunk.n
        if self.auto_ack:
            self._save_position(reader)  # so that a crash now does not set the chunk aside twice
        elif settled:
            self._acked = self._taken
            self._save_position(reader)
        # else a position past the chunk would acknowledge the items returned before it: after a
        # crash or nack() the chunk is set aside once more (a second bad_ file), and nothing is lost

    def _save_position(self, reader: BatchReader, position: Optional[int] = None) -> None:
        """Record the acknowledged position (``position``, else the claimed batch's); a failure is not fatal.

        A failure (disk full, a read-only file) is logged once per batch.

        The position only bounds the duplicates after a crash: without it, items since the last
        recorded position come again. Delivery goes on, which is what frees a full disk.
        """
        if position is None:
            position = self._taken if self.auto_ack else self._acked
        try:
            reader.save_acked(position)
        except sqlite3.Error as exc:
            if self._unsaved != reader.path:  # once per batch, not once per chunk
                self._unsaved = reader.path
                log.warning("turbo_queue: cannot record the acknowledged position in %s (%s); after a crash "
                            "items since the last recorded one (%d) will be delivered again", reader.path, exc,
                            reader.acked)

    def _quarantine(self, reason: str) -> None:
        """Set a batch that cannot be read aside as ``bad_`` and go on with the next."""
        batch = self._batch
        assert batch is not None
        if self._reader is not None:
            self._reader.close()
        name = batch.name.filename
        batch.move(_folder.BAD, self.durable)
        batch.unlock()
        log.error("turbo_queue: %s: %s; kept as %s for a person to look at", name, reason, batch.name.filename)
        self._batch, self._reader = None, None  # items decoded before the bad chunk are still returned

    def _hand_back_claimed(self) -> None:
        """Hand back the claimed batch at its acknowledged position."""
        batch, reader = self._batch, self._reader
        if batch is None or reader is None:
            return
        self._batch, self._reader = None, None
        self._hand_back(batch, reader, self._taken if self.auto_ack else self._acked)

    def _hand_back(self, batch: _folder.Batch, reader: BatchReader, position: int) -> None:
        """Record ``position``, close SQLite, rename to ``ready_`` (or delete if all acknowledged), unlock."""
        try:
            if position >= reader.count:
                reader.close()
                batch.remove(self.durable)
                return
            if position != reader.acked:
                self._save_position(reader, position)
            reader.close()
            if _batchfile.has_journal(batch.path):  # a failed save left one (R1): recovery rolls it back in place
                log.error("turbo_queue: %s has a journal beside it; left as chosen_ for recover()", batch.path)
                return
            batch.move(_folder.READY, self.durable)
        finally:
            batch.unlock()  # whatever failed, never keep the lock: recover() then re-queues the file

    def _close_at_exit(self) -> None:
        self.close()

    def _forget_after_fork(self) -> None:
        # Its batch's lock: _folder closes the child's copy of every batch lock.
        if self._reader is not None:
            _lifecycle.keep_inherited(self._reader.forget())
        for held in self._returned:
            _lifecycle.keep_inherited(held.reader.forget())
        self._counters = None  # the parent's: a child counts in counters of its own
        self._reset()


def _peek_ready(path: str, n: int) -> List[Any]:
    """The first ``n`` unacknowledged items of a ``ready_`` batch, read without a lock; [] if it
    cannot be read now (claimed meanwhile, a newer format, damaged, undecodable)."""
    if _batchfile.has_journal(path):
        return []
    try:
        conn = _batchfile.open_read_only(path)
    except (OSError, sqlite3.Error):
        return []
    try:
        return _batchfile.unacknowledged(conn, path, n)[1]
    except Exception:  # also any error of the codec: unpickling runs code from the file
        return []
    finally:
        conn.close()
