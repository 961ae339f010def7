"""The turbo-queue 0.5.2 API (``startup``, ``enqueue``, ``dequeue``), kept for code written against it.

A thin layer over ``Enqueuer``, ``Dequeuer`` and ``recover``, with the old settings as properties.
It fixes what 0.5.2 got wrong: the batch timer runs, the partial batch is flushed at exit, the
cleaner never touches a live process's file, ``update_enqueue_active_state()`` works without
``setup_logging()``, and any JSON value (``123``, ``0``, ``{}``) round-trips. New code should use
``Enqueuer``/``Dequeuer`` or ``Queue``.
"""

from __future__ import annotations

import logging
import os
import queue
import time
import uuid
from typing import Any, Generator, Optional

from .. import _folder
from ..consumer import Dequeuer
from ..producer import Enqueuer
from ..recovery import recover


class _Setting:
    """A property of the old API: typed, validated when set, as 0.5.2's setters were."""

    def __init__(self, kind: type, default: Any, minimum: Optional[int] = None) -> None:
        self.kind, self.default, self.minimum = kind, default, minimum

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: Optional[type] = None) -> Any:
        if obj is None:
            return self
        return obj.__dict__.get(self.name, self.default)

    def __set__(self, obj: Any, value: Any) -> None:
        wrong_type = type(value) is not self.kind  # (checked first: a str is never compared with the minimum)
        if wrong_type or (self.minimum is not None and value < self.minimum):
            rule = f"an integer >= {self.minimum}" if self.minimum is not None else f"a {self.kind.__name__}"
            raise ValueError(f"{self.name} must be {rule}, got {value!r}")
        obj.__dict__[self.name] = value


class _Base:
    queue_name = _Setting(str, "example_queue_name")
    root_path = _Setting(str, "/dc_data")
    max_ready_files = _Setting(int, 1, minimum=1)
    max_events_per_file = _Setting(int, 80000, minimum=1)
    max_batch_age = _Setting(int, 10, minimum=1)
    enqueue_active = _Setting(bool, False)

    @property
    def folder(self) -> str:
        """The queue folder: ``root_path/queue_name``."""
        root: str = self.root_path
        name: str = self.queue_name
        return os.path.join(root, name)

    def setup_logging(self, logger_name: str = "turbo_queue", level: int = logging.WARNING,
                      log_file: str = "turbo_queue.log") -> None:
        """Send turbo_queue's log to ``log_file`` (optional: nothing needs it any more)."""
        self.logger = logging.getLogger(logger_name)
        self.logger.setLevel(level)
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s : %(levelname)s : %(name)s : %(message)s"))
        self.logger.addHandler(handler)

    def get_ready_length(self) -> int:
        """How many ``ready_`` batches wait in the folder."""
        try:
            return _folder.count_ready(self.folder)
        except FileNotFoundError:
            return 0


class startup(_Base):
    """Startup cleanup: re-queue what dead processes left behind."""

    def on_start_cleanup(self) -> None:
        """Recover the folder's orphaned files. Files of live processes are left alone."""
        recover(self.folder)


class enqueue(_Base):
    """Loads items into a queue: set the properties, call ``start()``, then ``add(data)``."""

    def __init__(self) -> None:
        self._enqueuer: Optional[Enqueuer] = None

    def start(self) -> None:
        """Open the queue for adding, with the current settings."""
        if self._enqueuer is None:
            self._enqueuer = Enqueuer(self.folder, batch_size=self.max_events_per_file,
                                      max_batch_delay=self.max_batch_age, codec="json-stdlib")

    def add(self, data: Any) -> None:
        """Add one JSON-serializable item (``start()`` is called for you if needed)."""
        if self._enqueuer is None:
            self.start()
        assert self._enqueuer is not None
        self._enqueuer.put(data)

    def update_enqueue_active_state(self) -> None:
        """Set ``enqueue_active`` to whether fewer than ``max_ready_files`` batches wait."""
        self.enqueue_active = self.get_ready_length() < self.max_ready_files

    def flush(self) -> None:
        """Hand the partial batch over now."""
        if self._enqueuer is not None:
            self._enqueuer.flush()

    def close(self) -> None:
        if self._enqueuer is not None:
            self._enqueuer.close()


class dequeue(_Base):
    """Takes items from a queue: ``get()`` returns a generator of items.

    The generator yields ``None`` when the queue is empty (after waiting up to half a second);
    call ``next()`` on it again to look again. An item may itself be falsy (``0``, ``{}``), so
    test ``is None``, not truth: ``while (data := next(gen)) is not None: ...``.
    """

    auto_cleanup = _Setting(bool, True)  # kept for old callers: finished batches always go

    def __init__(self, proc_num: Optional[int] = None) -> None:
        self.proc_num = proc_num
        self._dequeuer: Optional[Dequeuer] = None
        self._total_gets = 0

    def get(self) -> Generator[Any, None, None]:
        if self._dequeuer is None:
            self._dequeuer = Dequeuer(self.folder)
        dequeuer = self._dequeuer
        while True:
            try:
                item = dequeuer.get(timeout=0.5)
            except queue.Empty:
                yield None
                continue
            self._total_gets += 1
            yield item

    def total_gets(self) -> int:
        """How many items this dequeue has yielded."""
        return self._total_gets

    def total_batch(self) -> int:
        """How many batches this dequeue has claimed."""
        return self._dequeuer.claimed if self._dequeuer is not None else 0

    def clean_up(self) -> None:
        """Kept for old callers: finished batches are removed on their own."""

    def close(self) -> None:
        """Hand back what was not yielded."""
        if self._dequeuer is not None:
            self._dequeuer.close()


# -- turbo-queue 0.8.0 ------------------------------------------------------------------------


class _Base080(_Base):
    """The settings 0.8.0 added. Most steered its own loops and mean nothing here any more; they
    are kept, validated as 0.8.0 validated them, so that code setting them runs unchanged."""

    num_loaders = _Setting(int, 1, minimum=1)
    num_queues = _Setting(int, 1, minimum=1)
    dequeue_active = _Setting(bool, True)
    processing_hold = _Setting(bool, False)
    drop_overflow = _Setting(bool, False)
    remove_invalid = _Setting(bool, True)

    def get_current_epoch_int(self) -> int:
        return int(time.time())

    def get_uuid(self) -> uuid.UUID:
        return uuid.uuid4()

    def check_path_and_create(self, db_path: str) -> None:
        """Create the folder ``db_path`` (and its parents) unless it exists."""
        os.makedirs(db_path, exist_ok=True)

    def get_next_ready_file(self) -> Optional[str]:
        """The path of the oldest ``ready_`` batch, or None (a look only: nothing is claimed)."""
        try:
            names = _folder.ready_in_order(self.folder)
        except FileNotFoundError:
            return None
        return os.path.join(self.folder, names[0]) if names else None


class Startup(_Base080, startup):
    """0.8.0's startup cleanup. ``on_start_cleanup()`` also converts the folder's 0.5.2 and 0.8.0
    files (``load_``, ``unload_``, ``..._recovered.db``) so that they drain."""

    def migrate_queue(self) -> None:
        """A placeholder in 0.8.0, which did nothing; kept so that calling it still works."""


class Enqueue(_Base080, enqueue):
    """0.8.0's loader: set the properties, ``start()``, then ``add(data)``.

    The batch timer runs by itself, so ``check_time()``, ``check_slow_batch()`` and
    ``activate_check_batch_age()`` (0.8.0's unfinished attempts at it) have nothing left to do.
    With ``drop_overflow`` set, ``add()`` drops items while ``enqueue_active`` is false, as
    0.8.0 did (its docstring: for testing only).
    """

    def add(self, data: Any) -> None:
        if self.drop_overflow and not self.enqueue_active:
            return
        super().add(data)

    def check_time(self) -> None:
        """Nothing to do: the batch timer rolls a batch once it is ``max_batch_age`` old."""

    def activate_check_batch_age(self) -> None:
        """Nothing to do: the batch timer already runs (0.8.0's version blocked its caller forever)."""

    async def check_slow_batch(self) -> None:
        """Nothing to do: the batch timer already rolls slow batches."""


class Dequeue(_Base080, dequeue):
    """0.8.0's consumer: ``get()`` returns a generator of items, ``None`` when the queue is empty.

    With ``auto_cleanup`` (the default) an item counts as done once the next one is asked for.
    With ``auto_cleanup = False`` nothing yielded is done until ``clean_up()`` says so, and
    ``roll_back()`` hands every yielded item not yet cleaned up back to the queue, to be
    delivered again (0.8.0 did this per batch file; here it is per item, across batches).
    """

    def check_state(self) -> None:
        """A placeholder in 0.8.0, which did nothing; kept so that calling it still works."""
