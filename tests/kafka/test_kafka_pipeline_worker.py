"""The pipeline's worker with real processes and folders (no broker): outputs, failures, kills, crashes."""

from __future__ import annotations

import os
import queue
import signal
import sqlite3
import threading
import time
from typing import Any, Dict, List

import orjson
import pytest

from tests.support.supervised import wait_for
from turbo_queue import Dequeuer, Enqueuer, recover
from turbo_queue.kafka import Message, Worker, batched
from turbo_queue.kafka.worker import ERROR_HEADER, ORIGIN_HEADER, outputs
from turbo_queue.monitor import read_items, read_meta
from turbo_queue.supervisor import Supervisor


def fill(folder: str, count: int) -> None:
    with Enqueuer(folder, batch_size=250) as enqueuer:
        for n in range(count):
            enqueuer.put(Message(orjson.dumps({"n": n}), key=str(n % 7).encode(), headers=[("h", str(n).encode())],
                                 timestamp=1_700_000_000_000 + n, topic="t", partition=n % 3, offset=n))


def take_all(folder: str) -> List[Any]:
    out: List[Any] = []
    with Dequeuer(folder) as dequeuer:
        while True:
            try:
                out += dequeuer.get_many(1000, timeout=0.2)
            except queue.Empty:
                return out


def bad_batches(folder: str) -> List[str]:
    return sorted(name for name in os.listdir(folder) if name.startswith("bad_"))


def enrich(message: Message) -> Any:
    event = orjson.loads(message.value)
    n = event["n"]
    if n % 10 == 0:
        return None  # dropped
    if n % 10 == 1:
        return [{"n": n, "copy": 1}, {"n": n, "copy": 2}]  # several
    if n % 10 == 2:
        return (x for x in [b"raw-%d" % n])  # a generator
    if n % 10 == 3:
        return f"text-{n}"
    return Message({"n": n, "enriched": True}, key=message.key, headers=message.headers)


def expected(n: int) -> List[Any]:
    if n % 10 == 0:
        return []
    if n % 10 == 1:
        return [orjson.dumps({"n": n, "copy": 1}), orjson.dumps({"n": n, "copy": 2})]
    if n % 10 == 2:
        return [b"raw-%d" % n]
    if n % 10 == 3:
        return [f"text-{n}"]
    return [Message(orjson.dumps({"n": n, "enriched": True}), key=str(n % 7).encode(), headers=[("h", str(n).encode())])]


def _stop_on_sigterm(worker: Worker) -> None:
    signal.signal(signal.SIGTERM, lambda *a: worker.stop())


def run_worker(in_folder: str, out_folder: str, function: Any, settings: Dict[str, Any]) -> None:
    worker = Worker(in_folder, out_folder, function, **settings)
    _stop_on_sigterm(worker)
    worker.run()


def drained(folder: str) -> bool:
    return not [n for n in os.listdir(folder) if n.startswith(("ready_", "chosen_", "loading_"))]


def supervise(in_folder: str, out_folder: str, function: Any, count: int = 2, **settings: Any) -> Supervisor:
    supervisor = Supervisor(min_backoff=0.05)
    # As the pipeline does: a dead worker's batches are put back at once, not at the next
    # worker's recover_every.
    supervisor.add_group("worker", run_worker, count, args=(in_folder, out_folder, function, settings),
                         drained=lambda: drained(in_folder), on_death=lambda name, code: recover(in_folder))
    return supervisor


def run_in_thread(supervisor: Supervisor) -> threading.Thread:
    thread = threading.Thread(target=supervisor.run)
    thread.start()
    return thread


@pytest.fixture
def folders(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    return str(tmp_path / "in"), str(tmp_path / "out")


def test_outputs_of_every_form():
    m = Message(b"v", key=b"k")
    assert outputs(None) == []
    assert outputs(b"x") == [b"x"] and outputs("s") == ["s"] and outputs({"a": 1}) == [b'{"a":1}']
    assert outputs([1, None, "b"]) == [b"1", "b"] and outputs((x for x in [b"g"])) == [b"g"]
    assert outputs(m) == [m] and outputs(Message({"a": 1}, key=b"k")) == [Message(b'{"a":1}', key=b"k")]
    with pytest.raises(Exception, match="not bytes, str or JSON"):
        outputs(object())


def test_bad_settings_are_refused_at_construction(folders):
    with pytest.raises(ValueError, match="function must be callable"):
        Worker(*folders, "f")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="durable must be True or False, got 'no'"):
        Worker(*folders, lambda message: message.value, durable="no")  # type: ignore[arg-type]


def test_two_workers_turn_every_message_into_its_outputs_and_stop_once_drained(folders):
    in_folder, out_folder = folders
    fill(in_folder, 3000)
    supervisor = supervise(in_folder, out_folder, enrich)
    thread = run_in_thread(supervisor)
    wait_for(lambda: supervisor.pids(), message="workers start")
    supervisor.stop()  # the workers stop only once the in-folder drained
    thread.join(60)
    got = take_all(out_folder)
    want = [item for n in range(3000) for item in expected(n)]
    assert sorted(map(repr, got)) == sorted(map(repr, want))
    assert os.listdir(in_folder) == [] or drained(in_folder)


def test_a_worker_hands_over_the_outputs_of_many_messages_in_few_chunks(folders):
    # A put_many per message wrote a chunk (a row of the batch file) per message: the worker and
    # the sink then paid for every item what a chunk costs.
    in_folder, out_folder = folders
    fill(in_folder, 2000)
    worker = Worker(in_folder, out_folder, lambda message: message.value)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(lambda: drained(in_folder), message="the worker takes and acknowledges every message")
    finally:
        worker.stop()
        thread.join(30)
    chunks = items = 0
    for name in os.listdir(out_folder):
        if name.startswith("ready_"):
            with sqlite3.connect(os.path.join(out_folder, name)) as db:
                count, total = db.execute("SELECT COUNT(*), SUM(n) FROM items").fetchone()
            chunks, items = chunks + count, items + total
    assert items == 2000
    assert chunks <= 2000 // 10
    assert sorted(orjson.loads(v)["n"] for v in take_all(out_folder)) == list(range(2000))


def test_a_worker_killed_again_and_again_loses_nothing(folders):
    in_folder, out_folder = folders
    fill(in_folder, 4000)

    def slow(message: Message) -> Any:
        time.sleep(0.0002)
        return message.value

    supervisor = supervise(in_folder, out_folder, slow)
    thread = run_in_thread(supervisor)
    try:
        for _ in range(5):
            wait_for(lambda: len(supervisor.pids()) == 2, message="both workers run")
            time.sleep(0.15)
            os.kill(supervisor.pids()["worker-0"], signal.SIGKILL)
            wait_for(lambda: supervisor.restarts > _, message="the killed worker is started again")
    finally:
        supervisor.stop()
        thread.join(60)
    assert supervisor.restarts >= 5
    got = take_all(out_folder)
    assert {orjson.loads(v)["n"] for v in got} == set(range(4000))  # at least once: every one arrived
    assert len(got) - 4000 <= 5 * 6000  # duplicates: at most the unacknowledged rounds of the killed workers


def test_a_message_the_function_fails_on_is_set_aside_with_the_error_and_the_rest_go_on(folders):
    in_folder, out_folder = folders
    fill(in_folder, 500)

    def picky(message: Message) -> Any:
        if orjson.loads(message.value)["n"] in (7, 300):
            raise ValueError("seven and three hundred are not allowed")
        return message.value

    supervisor = supervise(in_folder, out_folder, picky, count=1)
    thread = run_in_thread(supervisor)
    wait_for(lambda: supervisor.pids(), message="workers start")
    supervisor.stop()
    thread.join(60)
    assert len(take_all(out_folder)) == 498
    aside = bad_batches(in_folder)
    assert aside
    kept: List[Message] = []
    for name in aside:
        meta, items = read_items(os.path.join(in_folder, name), 100)
        assert meta["reason"] == "the function raised ValueError: seven and three hundred are not allowed"
        kept += items
    assert sorted(orjson.loads(m.value)["n"] for m in kept) == [7, 300]
    headers = dict(kept[0].headers)
    assert headers[ERROR_HEADER] == b"the function raised ValueError: seven and three hundred are not allowed"
    assert headers[ORIGIN_HEADER] == f"t/{kept[0].partition}/{kept[0].offset}".encode()


def test_with_a_dead_letter_folder_failures_go_there(folders, tmp_path):
    in_folder, out_folder = folders
    dead = str(tmp_path / "dead")
    os.mkdir(dead)
    fill(in_folder, 200)

    def fails_on_odd(message: Message) -> Any:
        if message.offset % 2:
            raise KeyError("odd")
        return message.value

    supervisor = supervise(in_folder, out_folder, fails_on_odd, count=1, dead_letter_folder=dead)
    thread = run_in_thread(supervisor)
    wait_for(lambda: supervisor.pids(), message="workers start")
    supervisor.stop()
    thread.join(60)
    assert len(take_all(out_folder)) == 100
    failed = take_all(dead)
    assert sorted(m.offset for m in failed) == list(range(1, 200, 2))
    assert all(dict(m.headers)[ERROR_HEADER] == b"the function raised KeyError: 'odd'" for m in failed)
    assert bad_batches(in_folder) == []


@batched
def count_them(messages: List[Message]) -> Any:
    return [{"count": len(messages), "first": messages[0].offset}] + [m.value for m in messages]


def test_the_batch_form_gets_lists(folders):
    in_folder, out_folder = folders
    fill(in_folder, 1000)
    supervisor = supervise(in_folder, out_folder, count_them, count=1)
    thread = run_in_thread(supervisor)
    wait_for(lambda: supervisor.pids(), message="workers start")
    supervisor.stop()
    thread.join(60)
    got = take_all(out_folder)
    summaries = [orjson.loads(v) for v in got if b"count" in v]
    assert sum(s["count"] for s in summaries) == 1000 and len(got) == 1000 + len(summaries)


def segfault_on_13(message: Message) -> Any:
    if message.offset == 13:
        os.kill(os.getpid(), signal.SIGSEGV)
    return message.value


def test_a_message_that_crashes_the_worker_is_set_aside_after_max_crashes(folders):
    in_folder, out_folder = folders
    fill(in_folder, 300)
    supervisor = supervise(in_folder, out_folder, segfault_on_13, count=1, max_crashes=2)
    thread = run_in_thread(supervisor)
    try:
        wait_for(lambda: bad_batches(in_folder), message="the poison message set aside")
    finally:
        supervisor.stop()
        thread.join(60)
    assert supervisor.restarts == 2
    got = {orjson.loads(v)["n"] for v in take_all(out_folder)}
    aside = [item for name in bad_batches(in_folder)
             for item in read_items(os.path.join(in_folder, name), 1000)[1]]
    assert 13 in {m.offset for m in aside} and 13 not in got
    assert got | {m.offset for m in aside} == set(range(300))  # nothing lost
    assert "consumers died" in read_meta(os.path.join(in_folder, bad_batches(in_folder)[0]))["reason"]
