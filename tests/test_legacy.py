"""The turbo-queue 0.5.2 API (``startup``, ``enqueue``, ``dequeue``) on top of the new core.

The original README's Quickstart runs as a separate program, and each bug of 0.5.2 that the
legacy layer fixes has a test here: the batch timer that never ran, the partial batch lost at
exit, ``update_enqueue_active_state()`` failing without ``setup_logging()``, the start-up cleaner
that renamed files of live processes, and falsy items (``0``, ``{}``) ending the ``get()`` loop.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List

import pytest

import turbo_queue

from tests.support import listing, run_python, until_none, wait_for

# The Quickstart of the turbo-queue 0.5.2 README, character for character (its typo included:
# ``fast_queue.dequeue(1)``; the test reads it as ``turbo_queue`` and points root_path at a
# temporary folder, and changes nothing else).
QUICKSTART = '''import turbo_queue

queue_name = 'data_in'
root_path = '/path/to/queue'

### cleanup queues from pervious restarts
clean_turbo_queue = turbo_queue.startup()
clean_turbo_queue.queue_name = queue_name
clean_turbo_queue.root_path = root_path
clean_turbo_queue.on_start_cleanup()

### enqueue data  
enqueue = turbo_queue.enqueue()
enqueue.queue_name = queue_name
enqueue.root_path = root_path
enqueue.max_ready_files = 5
enqueue.max_events_per_file = 1000
enqueue.start()

enqueue.update_enqueue_active_state()
while enqueue.enqueue_active:
  data = """{"data":"add_to_queue"}"""
  enqueue.add(data)
  enqueue.update_enqueue_active_state()
  # update_enqueue_active_state needs to be run at some frequency
  # if the number of ready files exceeds the max, the state will will be set to False
  # this is the mechanism used to address downstream backup in the queue

### Dequeue data
dequeue = fast_queue.dequeue(1)
dequeue.queue_name = queue_name
dequeue.root_path = root_path
get_data = dequeue.get()
data = next(get_data)
while data:
    data = next(get_data)
# data = None when the queue is currently empty
# call next(get_data) again to check the queue for more data
'''

#: How long a test waits for something that should happen at once or within a second or two.
DEADLINE = 30.0


# -- helpers -----------------------------------------------------------------------------------


@pytest.fixture
def legacy(folder: str) -> Iterator[Callable[..., Any]]:
    """Make legacy objects on the test's queue folder (root_path/queue_name), closed at the end."""
    made: List[Any] = []

    def make(kind: str, *args: Any, **settings: Any) -> Any:
        obj = getattr(turbo_queue, kind)(*args)
        obj.root_path = os.path.dirname(folder)
        obj.queue_name = os.path.basename(folder)
        for name, value in settings.items():
            setattr(obj, name, value)
        made.append(obj)
        return obj

    yield make
    for obj in reversed(made):
        if hasattr(obj, "close"):
            obj.close()


# The settings a child program uses to reach the test's folder.
CHILD_PRELUDE = """
import json, os, sys
import turbo_queue

def legacy(kind, *args, **settings):
    obj = getattr(turbo_queue, kind)(*args)
    obj.root_path, obj.queue_name = os.path.split(sys.argv[1])
    for name, value in settings.items():
        setattr(obj, name, value)
    return obj

def take_until_none(dequeue):
    gen = dequeue.get()
    out = []
    while (data := next(gen)) is not None:
        out.append(data)
    return out
"""


def child_code(body: str) -> str:
    return CHILD_PRELUDE + textwrap.dedent(body)


def next_item(gen: Iterator[Any], deadline: float = DEADLINE) -> Any:
    """The next item the legacy generator yields that is not None (None: the queue was empty)."""
    end = time.monotonic() + deadline
    while True:
        data = next(gen)
        if data is not None:
            return data
        assert time.monotonic() < end, f"nothing reached the dequeue within {deadline} s"


# -- the README's Quickstart, as a separate program -------------------------------------------


def test_readme_quickstart_runs_unchanged(tmp_path) -> None:
    root = str(tmp_path / "queues")
    script = QUICKSTART
    assert script.count("fast_queue.dequeue(1)") == 1 and script.count("root_path = '/path/to/queue'") == 1
    script = script.replace("fast_queue.dequeue(1)", "turbo_queue.dequeue(1)")
    script = script.replace("root_path = '/path/to/queue'", f"root_path = {root!r}")
    # The only addition: report what the script's loop took, for the assertions below.
    script += 'print("dequeued", dequeue.total_gets(), "batches", dequeue.total_batch(), "last", repr(data))\n'
    path = tmp_path / "quickstart.py"
    path.write_text(script)

    result = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, cwd=tmp_path, timeout=120)

    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    # 5 ready files of 1000 items each stop the enqueue loop; the dequeue loop takes all of them
    # and stops at the None that means "the queue is empty now".
    assert result.stdout.splitlines()[-1] == "dequeued 5000 batches 5 last None", result.stdout
    assert os.listdir(os.path.join(root, "data_in")) == []
    assert not (tmp_path / "turbo_queue.log").exists()  # no setup_logging() call, no log file


def test_quickstart_items_come_back_as_added(legacy) -> None:
    """The Quickstart adds a JSON *string*; it comes back as that string, not parsed."""
    enqueue = legacy("enqueue")
    data = """{"data":"add_to_queue"}"""
    enqueue.add(data)
    enqueue.add({"data": "add_to_queue"})
    enqueue.flush()
    assert until_none(legacy("dequeue", 1).get()) == [data, {"data": "add_to_queue"}]


# -- 0.5.2 bug: the batch timer never ran ------------------------------------------------------


def test_batch_timer_hands_over_a_lone_item(folder, children, legacy) -> None:
    producer = children(child_code("""
        enqueue = legacy("enqueue", max_batch_age=1, max_events_per_file=1000)
        enqueue.add({"lonely": True})
        print("added", flush=True)
        sys.stdin.readline()  # idle: no more adds, no flush, no close
        print("leaving", flush=True)
    """), folder)
    producer.expect("added")

    gen = legacy("dequeue").get()
    assert next_item(gen) == {"lonely": True}
    # The producer is still idle in readline(): the timer handed the batch over, not the exit.
    assert producer.proc.poll() is None
    producer.send()
    producer.expect("leaving")
    assert producer.finish() == 0
    assert next(gen) is None  # nothing more, nothing twice


def test_batch_timer_rolls_the_file_in_process(folder, legacy) -> None:
    enqueue = legacy("enqueue", max_batch_age=1, max_events_per_file=1000)
    enqueue.add(1)
    wait_for(lambda: listing(folder)["ready"], "the roll of the partial batch", interval=0.01)
    assert len(listing(folder)["ready"]) == 1
    assert until_none(legacy("dequeue").get()) == [1]


# -- 0.5.2 bug: the partial batch was lost when the process ended ------------------------------


@pytest.mark.parametrize(
    "ending, code",
    [("end of the script", 0), ("sys.exit(0)", 0), ("an uncaught exception", 1)],
)
def test_partial_batch_is_flushed_at_exit(folder, legacy, ending, code) -> None:
    last_line = {
        "end of the script": "pass",
        "sys.exit(0)": "sys.exit(0)",
        "an uncaught exception": "raise RuntimeError('the program failed after adding')",
    }[ending]
    result = run_python(child_code(f"""
        enqueue = legacy("enqueue", max_batch_age=3600, max_events_per_file=1000)
        for i in range(3):
            enqueue.add({{"n": i}})
        {last_line}
    """), folder, check=False)
    assert result.returncode == code, result.stderr
    assert listing(folder)["loading"] == [] and len(listing(folder)["ready"]) == 1
    assert until_none(legacy("dequeue").get()) == [{"n": 0}, {"n": 1}, {"n": 2}]


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_partial_batch_is_flushed_when_a_multiprocessing_child_returns(folder, legacy, tmp_path, method) -> None:
    """``multiprocessing`` children skip ``atexit``; their partial batch must arrive too."""
    script = tmp_path / "mp_child.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing, os, sys
        import turbo_queue

        def work(folder):
            enqueue = turbo_queue.enqueue()
            enqueue.root_path, enqueue.queue_name = os.path.split(folder)
            enqueue.max_batch_age = 3600
            for i in range(150):  # a chunk written into the loading_ file, and 50 pending
                enqueue.add(i)

        if __name__ == "__main__":
            method, folder = sys.argv[1:]
            process = multiprocessing.get_context(method).Process(target=work, args=(folder,))
            process.start()
            process.join()
            sys.exit(process.exitcode)
    """))
    result = subprocess.run([sys.executable, str(script), method, folder], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert listing(folder)["loading"] == [] and len(listing(folder)["ready"]) == 1
    assert until_none(legacy("dequeue").get()) == list(range(150))


# -- 0.5.2 bug: update_enqueue_active_state() needed setup_logging() ----------------------------


def test_update_enqueue_active_state_without_setup_logging(tmp_path, monkeypatch, legacy) -> None:
    monkeypatch.chdir(tmp_path)
    enqueue = legacy("enqueue")
    assert not hasattr(enqueue, "logger")
    assert enqueue.enqueue_active is False  # 0.5.2's starting value
    enqueue.update_enqueue_active_state()  # 0.5.2: AttributeError (self.logger)
    assert enqueue.enqueue_active is True
    assert not (tmp_path / "turbo_queue.log").exists()


def test_update_enqueue_active_state_before_the_folder_exists(tmp_path) -> None:
    enqueue = turbo_queue.enqueue()
    enqueue.root_path = str(tmp_path / "not" / "yet")
    enqueue.queue_name = "q"
    assert enqueue.get_ready_length() == 0
    enqueue.update_enqueue_active_state()
    assert enqueue.enqueue_active is True
    assert not (tmp_path / "not").exists()  # looking does not create anything


# -- 0.5.2 bug: the start-up cleaner renamed files that live processes were using ---------------


def cleanup(folder: str) -> None:
    clean = turbo_queue.startup()
    clean.root_path, clean.queue_name = os.path.split(folder)
    clean.on_start_cleanup()


def test_cleanup_leaves_a_live_enqueues_partial_batch_alone(folder, children, legacy) -> None:
    producer = children(child_code("""
        enqueue = legacy("enqueue", max_batch_age=3600, max_events_per_file=1000)
        for i in range(150):  # 100 written into the loading_ file (uncommitted), 50 pending
            enqueue.add(i)
        print("added", flush=True)
        sys.stdin.readline()
        for i in range(150, 160):
            enqueue.add(i)
        print("done", flush=True)
        # no close(): the exit flush hands the batch over
    """), folder)
    producer.expect("added")
    before = sorted(os.listdir(folder))  # the loading_ file, and its journal while it is written
    assert len(listing(folder)["loading"]) == 1 and listing(folder)["ready"] == [], before
    loading = os.path.join(folder, listing(folder)["loading"][0])
    inode = os.stat(loading).st_ino

    cleanup(folder)

    assert sorted(os.listdir(folder)) == before
    assert os.stat(loading).st_ino == inode
    assert next(legacy("dequeue").get()) is None  # nothing was handed to consumers early

    producer.send()
    producer.expect("done")
    assert producer.finish() == 0
    assert until_none(legacy("dequeue").get()) == list(range(160))
    assert os.listdir(folder) == []


def test_cleanup_leaves_a_live_dequeue_in_the_middle_of_a_batch_alone(folder, children, legacy) -> None:
    enqueue = legacy("enqueue", max_events_per_file=2500)
    for i in range(2500):  # one batch, larger than what a consumer decodes at once
        enqueue.add(i)
    assert len(listing(folder)["ready"]) == 1
    consumer = children(child_code("""
        dequeue = legacy("dequeue", 7)
        gen = dequeue.get()
        first = [next(gen), next(gen)]
        print("took", json.dumps(first), flush=True)
        sys.stdin.readline()
        rest = []
        while (data := next(gen)) is not None:
            rest.append(data)
        print("rest", json.dumps(rest), flush=True)
        print("totals", dequeue.total_gets(), dequeue.total_batch(), flush=True)
    """), folder)
    assert consumer.expect("took") == "[0, 1]"
    before = sorted(os.listdir(folder))
    assert len(listing(folder)["chosen"]) == 1 and listing(folder)["ready"] == [], before
    chosen = os.path.join(folder, listing(folder)["chosen"][0])
    inode = os.stat(chosen).st_ino

    cleanup(folder)

    assert sorted(os.listdir(folder)) == before
    assert os.stat(chosen).st_ino == inode
    assert next(legacy("dequeue").get()) is None  # a second consumer finds nothing to take

    consumer.send()
    assert consumer.expect("rest") == str(list(range(2, 2500)))
    assert consumer.expect("totals") == "2500 1"
    assert consumer.finish() == 0
    assert os.listdir(folder) == []


def test_cleanup_requeues_what_a_killed_dequeue_held(folder, children, legacy) -> None:
    """The other half of the cleaner's job: a dead process's batch comes back (at least once)."""
    enqueue = legacy("enqueue", max_events_per_file=10)
    for i in range(10):
        enqueue.add(i)
    consumer = children(child_code("""
        gen = legacy("dequeue").get()
        print("took", next(gen), next(gen), flush=True)
        sys.stdin.readline()
    """), folder)
    assert consumer.expect("took") == "0 1"
    consumer.kill()
    assert len(listing(folder)["chosen"]) == 1

    cleanup(folder)

    assert listing(folder)["chosen"] == [] and len(listing(folder)["ready"]) == 1
    # Items in the dead consumer's hands were never acknowledged: they come again.
    assert until_none(legacy("dequeue").get()) == list(range(10))


# -- 0.5.2 bug: falsy items ended the get() loop; any JSON value round-trips --------------------


FALSY_AND_OTHER_VALUES = [123, 0, {}, "", [], False, 0.0, -1, "text", {"a": [1, {"b": None}]}, [0, "", {}], 2.5, True]


def test_any_json_value_round_trips(legacy) -> None:
    enqueue = legacy("enqueue")
    for value in FALSY_AND_OTHER_VALUES:
        enqueue.add(value)
    enqueue.flush()
    dequeue = legacy("dequeue")
    got = until_none(dequeue.get())
    assert got == FALSY_AND_OTHER_VALUES
    assert [type(v) for v in got] == [type(v) for v in FALSY_AND_OTHER_VALUES]  # 0 stays int, False bool
    assert dequeue.total_gets() == len(FALSY_AND_OTHER_VALUES)


def test_add_none_is_read_as_an_empty_queue(legacy) -> None:
    """``add(None)`` stores JSON ``null``; ``get()`` yields it as ``None``, which is also its
    "the queue is empty" signal, so it cannot be told apart: the ``is not None`` loop stops at
    it. Nothing is lost: the next ``next()`` goes on with the items after it (and
    ``total_gets()`` counts the None item). Do not add None through this API."""
    enqueue = legacy("enqueue")
    for value in ("before", None, "after"):
        enqueue.add(value)
    enqueue.flush()
    dequeue = legacy("dequeue")
    gen = dequeue.get()
    assert until_none(gen) == ["before"]  # stopped at the None item, the queue is not empty
    assert dequeue.total_gets() == 2
    assert next(gen) == "after"
    assert next(gen) is None  # now the queue really is empty
    assert dequeue.total_gets() == 3


def test_add_refuses_what_json_cannot_hold(legacy) -> None:
    enqueue = legacy("enqueue")
    with pytest.raises(TypeError):
        enqueue.add({1, 2})
    with pytest.raises(TypeError):
        enqueue.add(object())
    enqueue.add("still usable")
    enqueue.flush()
    assert until_none(legacy("dequeue").get()) == ["still usable"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_add_non_finite_float_round_trips_as_in_0_5_2(legacy, value) -> None:
    """0.5.2 stored ``json.dumps(value)`` (``NaN``, ``Infinity``) and read it back as the same float.
    It must not come back as ``None`` (the legacy "queue is empty" value): that silently changes
    the item and ends the reader's loop. Refusing it loudly at ``add`` would be acceptable too."""
    enqueue = legacy("enqueue")
    try:
        enqueue.add({"x": value})
        enqueue.add(value)
    except (TypeError, ValueError):
        return  # refused loudly at add(): acceptable
    enqueue.flush()
    gen = legacy("dequeue").get()
    first, second = next_item(gen), next(gen)
    assert isinstance(first, dict) and isinstance(first["x"], float) and isinstance(second, float), (
        f"add({{'x': {value!r}}}) came back as {first!r} and add({value!r}) as {second!r} "
        f"(None is also what get() yields for an empty queue)"
    )
    assert all(math.isnan(v) if math.isnan(value) else v == value for v in (first["x"], second))


def test_add_big_int_round_trips_as_in_0_5_2(legacy) -> None:
    """0.5.2 used the stdlib json module: any int round-tripped. The JSON codec here stops at 2**64."""
    values = [2**64, -(2**63) - 1, 10**30]
    enqueue = legacy("enqueue")
    for value in values:
        enqueue.add(value)  # TypeError: Integer exceeds 64-bit range
    enqueue.flush()
    assert until_none(legacy("dequeue").get()) == values


# -- get(): None when empty, items again after more are added ----------------------------------


def test_get_yields_none_when_empty_then_items_again(legacy) -> None:
    dequeue = legacy("dequeue")
    gen = dequeue.get()
    assert next(gen) is None  # empty queue
    assert next(gen) is None  # still empty: the generator goes on, it does not end

    enqueue = legacy("enqueue")
    enqueue.add({"n": 1})
    enqueue.add(0)
    enqueue.flush()  # handed over now, so the next next() finds it
    assert next(gen) == {"n": 1}
    assert next(gen) == 0
    assert next(gen) is None

    enqueue.add("again")
    enqueue.flush()
    assert next(gen) == "again"
    assert next(gen) is None
    assert dequeue.total_gets() == 3


def test_items_added_by_another_program_reach_a_waiting_generator(folder, children, legacy) -> None:
    gen = legacy("dequeue").get()
    assert next(gen) is None
    producer = children(child_code("""
        enqueue = legacy("enqueue", max_events_per_file=5)
        for i in range(12):
            enqueue.add(i)
        enqueue.close()
        print("closed", flush=True)
    """), folder)
    producer.expect("closed")
    assert producer.finish() == 0
    assert [next_item(gen) for _ in range(12)] == list(range(12))
    assert next(gen) is None


# -- the settings: typed, validated, as in 0.5.2 ------------------------------------------------


GOOD_SETTINGS = [
    ("queue_name", "q2"),
    ("root_path", "/some/where"),
    ("max_ready_files", 3),
    ("max_events_per_file", 1),
    ("max_batch_age", 1),
    ("enqueue_active", True),
    ("enqueue_active", False),
]

BAD_SETTINGS = [
    ("queue_name", 5), ("queue_name", None), ("queue_name", b"q"),
    ("root_path", None), ("root_path", 1), ("root_path", Path("/tmp")),
    ("max_ready_files", 0), ("max_ready_files", -1), ("max_ready_files", "5"), ("max_ready_files", 1.0),
    ("max_ready_files", True),
    ("max_events_per_file", 0), ("max_events_per_file", 2.5), ("max_events_per_file", None),
    ("max_batch_age", 0), ("max_batch_age", 0.5), ("max_batch_age", "10"), ("max_batch_age", False),
    ("enqueue_active", 1), ("enqueue_active", "yes"), ("enqueue_active", None),
]


@pytest.mark.parametrize("kind", ["startup", "enqueue", "dequeue"])
@pytest.mark.parametrize("name, value", GOOD_SETTINGS)
def test_setters_accept_the_right_type(kind, name, value) -> None:
    obj = getattr(turbo_queue, kind)()
    setattr(obj, name, value)
    assert getattr(obj, name) == value and type(getattr(obj, name)) is type(value)


@pytest.mark.parametrize("kind", ["startup", "enqueue", "dequeue"])
@pytest.mark.parametrize("name, value", BAD_SETTINGS, ids=[f"{n}={v!r}" for n, v in BAD_SETTINGS])
def test_setters_reject_the_wrong_type_with_valueerror(kind, name, value) -> None:
    obj = getattr(turbo_queue, kind)()
    before = getattr(obj, name)
    with pytest.raises(ValueError, match=name):
        setattr(obj, name, value)
    assert getattr(obj, name) == before  # unchanged


def test_defaults_are_those_of_0_5_2() -> None:
    obj = turbo_queue.enqueue()
    assert (obj.queue_name, obj.root_path, obj.max_ready_files, obj.max_events_per_file, obj.max_batch_age,
            obj.enqueue_active) == ("example_queue_name", "/dc_data", 1, 80000, 10, False)
    assert turbo_queue.dequeue().auto_cleanup is True


def test_settings_are_per_object() -> None:
    a, b = turbo_queue.enqueue(), turbo_queue.enqueue()
    a.max_ready_files = 7
    a.queue_name = "a"
    assert (b.max_ready_files, b.queue_name) == (1, "example_queue_name")


@pytest.mark.parametrize("value", [1, "yes", None])
def test_auto_cleanup_setter_rejects_non_bool(value) -> None:
    """0.5.2's ``dequeue.auto_cleanup`` was a property whose setter raised ValueError for a non-bool."""
    dequeue = turbo_queue.dequeue()
    with pytest.raises(ValueError):
        dequeue.auto_cleanup = value
    dequeue.auto_cleanup = False
    assert dequeue.auto_cleanup is False


# -- enqueue_active reflects max_ready_files ----------------------------------------------------


def test_enqueue_active_follows_the_ready_files(folder, legacy) -> None:
    enqueue = legacy("enqueue", max_ready_files=2, max_events_per_file=1)  # one item, one batch
    enqueue.update_enqueue_active_state()
    assert enqueue.enqueue_active is True

    enqueue.add("a")
    enqueue.update_enqueue_active_state()
    assert enqueue.get_ready_length() == 1 and enqueue.enqueue_active is True

    enqueue.add("b")
    enqueue.update_enqueue_active_state()
    assert enqueue.get_ready_length() == 2 and enqueue.enqueue_active is False

    enqueue.add("c")  # adding is still possible: the state is advice, as in 0.5.2
    enqueue.update_enqueue_active_state()
    assert enqueue.get_ready_length() == 3 and enqueue.enqueue_active is False

    gen = legacy("dequeue").get()
    assert next(gen) == "a"
    assert next(gen) == "b"  # "a" finished and deleted, "b" claimed: one ready_ left
    enqueue.update_enqueue_active_state()
    assert enqueue.get_ready_length() == 1 and enqueue.enqueue_active is True

    enqueue.max_ready_files = 1
    enqueue.update_enqueue_active_state()
    assert enqueue.enqueue_active is False
    enqueue.max_ready_files = 5
    enqueue.update_enqueue_active_state()
    assert enqueue.enqueue_active is True


def test_max_events_per_file_sets_the_batch_size(folder, legacy) -> None:
    enqueue = legacy("enqueue", max_events_per_file=4, max_batch_age=3600)
    for i in range(10):
        enqueue.add(i)
    assert len(listing(folder)["ready"]) == 2  # 4 + 4 handed over, 2 still loading
    enqueue.flush()
    assert len(listing(folder)["ready"]) == 3


# -- counters -----------------------------------------------------------------------------------


def test_total_gets_and_total_batch_count(legacy) -> None:
    dequeue = legacy("dequeue")
    assert (dequeue.total_gets(), dequeue.total_batch()) == (0, 0)
    enqueue = legacy("enqueue", max_events_per_file=4, max_batch_age=3600)
    for i in range(10):  # batches of 4, 4 and 2
        enqueue.add(i)
    enqueue.flush()

    gen = dequeue.get()
    assert next(gen) == 0
    assert (dequeue.total_gets(), dequeue.total_batch()) == (1, 1)
    assert [next(gen) for _ in range(4)] == [1, 2, 3, 4]
    assert (dequeue.total_gets(), dequeue.total_batch()) == (5, 2)
    assert until_none(gen) == [5, 6, 7, 8, 9]
    assert (dequeue.total_gets(), dequeue.total_batch()) == (10, 3)
    assert next(gen) is None  # a None for "empty" is not counted
    assert (dequeue.total_gets(), dequeue.total_batch()) == (10, 3)


def test_two_dequeues_share_the_items_without_duplicates(folder, children, legacy) -> None:
    enqueue = legacy("enqueue", max_events_per_file=50, max_batch_age=3600)
    for i in range(1000):
        enqueue.add(i)
    enqueue.flush()
    code = child_code("""
        dequeue = legacy("dequeue", int(sys.argv[2]))
        print("got", json.dumps(take_until_none(dequeue)), flush=True)
    """)
    workers = [children(code, folder, str(n)) for n in (1, 2)]
    got: List[int] = []
    for worker in workers:
        got += json.loads(worker.expect("got"))
        assert worker.finish() == 0
    assert sorted(got) == list(range(1000))
    assert os.listdir(folder) == []


def test_clean_up_is_harmless(legacy) -> None:
    enqueue = legacy("enqueue")
    enqueue.add(1)
    enqueue.add(2)
    enqueue.flush()
    dequeue = legacy("dequeue")
    gen = dequeue.get()
    assert next(gen) == 1
    dequeue.clean_up()  # 0.5.2: closes and deletes the batch; now finished batches go on their own
    assert until_none(gen) == [2]
