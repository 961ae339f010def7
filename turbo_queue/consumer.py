"""``Dequeuer``: a consumer on one queue folder (claim, read, acknowledge, hand back)."""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from typing import Any, Deque, Iterator, List, Optional, Set, Union

from . import _folder, _lifecycle, _platform, _shard, _upgrade, _watch
from ._counters import GOT, Counters
from ._errors import ShardFormatError
from ._shard import Chunk, ShardReader, ShardWriter
from .producer import _positive_int, _positive_number, check_timeout
from .recovery import recover

log = logging.getLogger("turbo_queue")

#: How soon a consumer looks again at ready_ files that were all held by other processes: the
#: process that handed a file over lets go of it just after the rename that woke the consumer
#: (after an fsync of the folder, when durable). The wait doubles while they stay held (a
#: stopped process may hold one), up to the last value.
_HELD_RETRY = (0.002, 0.1)

PathLike = Union[str, "os.PathLike[str]"]


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
        counters: Optional[Counters] = None,
    ) -> None:
        self.folder = os.path.abspath(os.fspath(folder))
        self._counters = counters  # where Queue counts items at get() time
        self.ack_every = _positive_int("ack_every", ack_every)
        self.recover_every = _positive_number("recover_every", recover_every)
        self.max_crashes = _positive_int("max_crashes", max_crashes)
        self.durable = bool(durable)
        self.allow_network_fs = bool(allow_network_fs)
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
        self._reader: Optional[ShardReader] = None
        self._taken = 0  # items of the claimed batch returned so far (its position)
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
            if self._careful:
                self._ack_all()
            if not self._items or timeout is not None:
                self._fill(block, timeout)
            self._taken += 1
            if self._counts is not None:
                self._counts[GOT] += 1
            return self._items.popleft()

    def get_many(self, max_items: int, block: bool = True, timeout: Optional[float] = None) -> List[Any]:
        """Up to ``max_items`` items (at least one), from one batch; ``queue.Empty`` as ``get`` does."""
        _positive_int("max_items", max_items)
        with self._lock:
            if self._careful:
                self._ack_all()
            if not self._items or timeout is not None:
                self._fill(block, timeout)
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

    def close(self) -> None:
        """Acknowledge what was returned and hand the rest of the batch back (``ready_``)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._items.clear()
            _lifecycle.untrack(self)
            self._release_batch()

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

    def __getstate__(self) -> dict:
        return {
            "folder": self.folder, "ack_every": self.ack_every, "recover_every": self.recover_every,
            "max_crashes": self.max_crashes, "durable": self.durable, "allow_network_fs": self.allow_network_fs,
        }

    def __setstate__(self, state: dict) -> None:
        folder = state.pop("folder")
        self.__init__(folder, **state)  # type: ignore[misc]

    # -- inside ----------------------------------------------------------------------------

    def _fill(self, block: bool, timeout: Optional[float]) -> None:
        """Make ``self._items`` non-empty, waiting as told; raise Empty or ValueError otherwise."""
        check_timeout(timeout)
        if self._closed:
            raise ValueError(f"Dequeuer for {self.folder} is closed")
        if self._items:
            return
        events = _watch.events(self.folder)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            generation = events.generation
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
                events.wait(generation, wait)
            finally:
                self._lock.acquire()
            if self._closed:
                raise ValueError(f"Dequeuer for {self.folder} is closed")
            if self._items:
                return

    def _read_more(self) -> bool:
        """Decode the next chunk of the claimed batch, or claim the next batch; False if none."""
        while True:
            if self._reader is None:
                if not self._claim():
                    return False
            elif self._next >= self._reader.count:
                self._finish_batch()
            elif self._read_chunk():
                return True

    def _read_chunk(self) -> bool:
        """Decode the next chunk of the claimed batch into ``_items``; False if it was set aside."""
        reader = self._reader
        assert reader is not None
        if self._taken - reader.acked >= self.ack_every:
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

    def _next_chunk(self, reader: ShardReader) -> Optional[Chunk]:
        """The chunk holding the next item; None if it was set aside or the batch quarantined."""
        try:
            chunk = reader.chunk_at(self._next)
        except _shard.DamagedChunk as exc:
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
                reader = ShardReader(batch.path, self.durable)
            except ShardFormatError as exc:
                log.error("turbo_queue: %s", exc)
                batch.move(_folder.READY, self.durable)
                batch.release()
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
            self._taken = self._next = reader.acked
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
            batch.release()

    def _finish_batch(self) -> None:
        """Every item was returned and acknowledged: delete the file, then drop the lock."""
        assert self._batch is not None and self._reader is not None
        self._reader.close()
        self._batch.remove(self.durable)
        self._batch.release()
        self._batch, self._reader = None, None

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
        try:
            aside = _folder.create(self.folder)
            try:
                meta = {"acked": self._next - chunk.first, "set_aside_from": source, "set_aside_first": chunk.first,
                        "reason": reason}
                writer = ShardWriter(aside.path, reader.codec, self.durable, meta=meta)
                try:
                    writer.append(chunk.n, chunk.data, chunk.crc)
                    writer.finish()
                except BaseException:
                    writer.abandon()
                    raise
                aside.move(_folder.BAD, self.durable)
            finally:
                aside.release()  # on a failure the loading_ file is an orphan: recovery removes or re-queues it
        except (sqlite3.Error, OSError) as exc:
            self._quarantine(f"{reason}; setting the chunk aside failed ({exc})")
            return
        log.error("turbo_queue: %s: %s; those %d items are kept in %s for a person to look at",
                  source, reason, chunk.n, aside.name.filename)
        self._taken = self._next = chunk.first + chunk.n
        self._save_position(reader)  # so that a crash now does not set the chunk aside twice

    def _save_position(self, reader: ShardReader) -> None:
        """Record the acknowledged position; a failure (disk full, a read-only file) is not fatal.

        The position only bounds the duplicates after a crash: without it, items since the last
        recorded position come again. Delivery goes on, which is what frees a full disk.
        """
        try:
            reader.save_acked(self._taken)
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
        batch.release()
        log.error("turbo_queue: %s: %s; kept as %s for a person to look at", name, reason, batch.name.filename)
        self._batch, self._reader = None, None  # items decoded before the bad chunk are still returned

    def _release_batch(self) -> None:
        """Hand back the claimed batch: record the position, close SQLite, rename, unlock."""
        batch, reader = self._batch, self._reader
        if batch is None or reader is None:
            return
        self._batch, self._reader = None, None
        try:
            if self._taken >= reader.count:
                reader.close()
                batch.remove(self.durable)
                return
            if self._taken != reader.acked:
                self._save_position(reader)
            reader.close()
            if _shard.has_journal(batch.path):  # a failed save left one (R1): recovery rolls it back in place
                log.error("turbo_queue: %s has a journal beside it; left as chosen_ for recover()", batch.path)
                return
            batch.move(_folder.READY, self.durable)
        finally:
            batch.release()  # whatever failed, never keep the lock: recover() then re-queues the file

    def _close_at_exit(self) -> None:
        self.close()

    def _forget_after_fork(self) -> None:
        # Its batch's lock: _folder closes the child's copy of every batch lock.
        if self._reader is not None:
            _lifecycle.keep_inherited(self._reader.forget())
        self._counters = None  # the parent's: a child counts in counters of its own
        self._reset()
