"""The turbo-queue 0.8.0 API (``Startup``, ``Enqueue``, ``Dequeue``) runs unchanged on the new core."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
import uuid
from typing import Any, Iterator, List

import pytest

import turbo_queue
from tests.support import until_none


@pytest.fixture
def made(folder: str) -> Iterator[List[Any]]:
    """0.8.0 objects set to the test's folder as 0.8.0's users set them; closed at the end."""
    objects: List[Any] = []
    yield objects
    for obj in reversed(objects):
        if hasattr(obj, "close"):
            obj.close()


def make(made: List[Any], folder: str, kind: str, *args: Any, **settings: Any) -> Any:
    obj = getattr(turbo_queue, kind)(*args)
    obj.root_path, obj.queue_name = os.path.split(folder)
    for name, value in settings.items():
        setattr(obj, name, value)
    made.append(obj)
    return obj


def test_load_and_unload_as_0_8_0_documented(folder, made):
    enqueue = make(made, folder, "Enqueue", max_ready_files=5, max_events_per_file=100)
    enqueue.start()
    for n in range(250):
        enqueue.add({"n": n})
    enqueue.update_enqueue_active_state()
    assert enqueue.get_ready_length() == 2 and enqueue.enqueue_active is True
    enqueue.flush()

    dequeue = make(made, folder, "Dequeue", 1)
    docs = until_none(dequeue.get())

    assert docs == [{"n": n} for n in range(250)]
    assert dequeue.total_gets() == 250 and dequeue.total_batch() == 3


NEW_SETTINGS = [("num_loaders", 4), ("num_queues", 2), ("dequeue_active", False), ("processing_hold", True),
                ("drop_overflow", True), ("remove_invalid", False)]
BAD_NEW_SETTINGS = [("num_loaders", 0), ("num_loaders", "2"), ("num_queues", -1), ("num_queues", 1.5),
                    ("dequeue_active", 1), ("processing_hold", None), ("drop_overflow", "no"),
                    ("remove_invalid", 0)]


@pytest.mark.parametrize("kind", ["Startup", "Enqueue", "Dequeue"])
@pytest.mark.parametrize("name, value", NEW_SETTINGS)
def test_the_settings_0_8_0_added_are_kept(kind, name, value):
    obj = getattr(turbo_queue, kind)()
    setattr(obj, name, value)
    assert getattr(obj, name) == value


@pytest.mark.parametrize("kind", ["Startup", "Enqueue", "Dequeue"])
@pytest.mark.parametrize("name, value", BAD_NEW_SETTINGS, ids=[f"{n}={v!r}" for n, v in BAD_NEW_SETTINGS])
def test_the_settings_0_8_0_added_refuse_the_wrong_type(kind, name, value):
    obj = getattr(turbo_queue, kind)()
    before = getattr(obj, name)
    with pytest.raises(ValueError, match=name):
        setattr(obj, name, value)
    assert getattr(obj, name) == before


def test_defaults_are_those_of_0_8_0():
    obj = turbo_queue.Enqueue()
    assert (obj.num_loaders, obj.num_queues, obj.max_ready_files, obj.max_events_per_file, obj.max_batch_age,
            obj.dequeue_active, obj.processing_hold, obj.drop_overflow, obj.remove_invalid) == \
        (1, 1, 1, 80000, 10, True, False, False, True)
    assert turbo_queue.Dequeue().auto_cleanup is True


def test_drop_overflow_drops_while_the_queue_is_full(folder, made):
    enqueue = make(made, folder, "Enqueue", max_ready_files=1, max_events_per_file=2, drop_overflow=True)
    enqueue.enqueue_active = True
    enqueue.add("a")
    enqueue.add("b")  # rolls: one ready_ file, the limit
    enqueue.update_enqueue_active_state()
    assert enqueue.enqueue_active is False
    enqueue.add("dropped")
    enqueue.flush()

    assert until_none(make(made, folder, "Dequeue").get()) == ["a", "b"]


def test_the_batch_age_checks_return_at_once_because_the_timer_runs(folder, made):
    enqueue = make(made, folder, "Enqueue", max_batch_age=1)
    enqueue.start()
    enqueue.add("late")
    enqueue.check_time()
    enqueue.activate_check_batch_age()  # blocked forever in 0.8.0
    asyncio.run(enqueue.check_slow_batch())
    deadline = time.monotonic() + 10
    while enqueue.get_ready_length() == 0:
        assert time.monotonic() < deadline, "the batch timer did not roll a lone item"
        time.sleep(0.05)


def test_get_next_ready_file_names_the_oldest_without_claiming_it(folder, made):
    enqueue = make(made, folder, "Enqueue", max_events_per_file=1)
    assert enqueue.get_next_ready_file() is None
    enqueue.add("first")
    enqueue.add("second")

    first = enqueue.get_next_ready_file()

    assert first is not None and os.path.basename(first).startswith("ready_")
    assert os.path.exists(first)
    assert until_none(make(made, folder, "Dequeue").get()) == ["first", "second"]


def test_check_path_and_create_makes_the_folder(tmp_path):
    path = str(tmp_path / "a" / "b")
    turbo_queue.Enqueue().check_path_and_create(path)
    turbo_queue.Enqueue().check_path_and_create(path)  # again: no error
    assert os.path.isdir(path)


def test_on_start_cleanup_makes_a_0_8_0_folder_drain(folder, made):
    path = os.path.join(folder, f"unload_{int(time.time())}_{uuid.uuid4()}.db_2")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE IF NOT EXISTS logs (log_data json)")
    conn.executemany("INSERT INTO logs (log_data) VALUES (?)", [(json.dumps({"k": k}),) for k in range(3)])
    conn.commit()
    conn.close()

    make(made, folder, "Startup").on_start_cleanup()

    assert not os.path.exists(path)
    assert until_none(make(made, folder, "Dequeue").get()) == [{"k": 0}, {"k": 1}, {"k": 2}]
