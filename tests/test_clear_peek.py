"""``clear()`` (purge what waits) and ``peek(n)`` (the first items waiting, untouched), as a user of
``queue.Queue`` or of other brokers expects them, with real processes."""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading

import pytest

from turbo_queue import Dequeuer, Enqueuer, JoinableQueue, Queue, set_aside

from .support import hand_over, listing

PRODUCER_HOLDING = """
import sys
from turbo_queue import Enqueuer
producer = Enqueuer(sys.argv[1], max_batch_delay=3600)
producer.put_many(["live"] * 5)
print("holding", flush=True)
sys.stdin.readline()
producer.close()
print("handed over", flush=True)
"""

CONSUMER_HOLDING = """
import sys
from turbo_queue import Dequeuer
consumer = Dequeuer(sys.argv[1])
print("got", consumer.get(timeout=10), flush=True)
sys.stdin.readline()
rest = []
while len(rest) < int(sys.argv[2]):
    rest += consumer.get_many(1000, timeout=10)
print("rest", len(rest), flush=True)
consumer.close()
"""


def _put_in_child(q: Queue, items: list) -> None:
    for item in items:
        q.put(item)
    q.close()


# -- peek ------------------------------------------------------------------------------------


def test_queue_peek_shows_what_get_returns_next_and_takes_nothing():
    q = Queue()
    try:
        child = multiprocessing.get_context("spawn").Process(target=_put_in_child, args=(q, list(range(5))))
        child.start()
        child.join()
        assert child.exitcode == 0
        q.put("mine")  # still in this process's batch: peek hands it over, as get() would
        assert q.peek(3) == [0, 1, 2]
        assert q.peek(100) == [0, 1, 2, 3, 4, "mine"]
        assert q.qsize() == 6
        assert [q.get(timeout=5) for _ in range(6)] == [0, 1, 2, 3, 4, "mine"]
        assert q.peek() == []
    finally:
        q.close()


def test_dequeuer_peek_starts_with_what_it_holds_then_ready_batches_in_order(folder):
    hand_over(folder, 25, 30)  # chunks of 10: the consumer holds the first batch in part
    with Dequeuer(folder) as consumer:
        assert consumer.peek(4) == [0, 1, 2, 3]
        assert [consumer.get(timeout=5) for _ in range(12)] == list(range(12))
        assert consumer.peek(20) == list(range(12, 32))  # decoded, the rest of its batch, the next batch
        assert consumer.peek(1000) == list(range(12, 55))
        assert consumer.get_many(1000, timeout=5) == list(range(12, 25))
        assert consumer.get_many(1000, timeout=5) == list(range(25, 55))


def test_peek_passes_over_an_unreadable_batch(folder):
    first, = hand_over(folder, 3)
    with open(os.path.join(folder, first), "r+b") as f:
        f.write(b"not a database at all")
    hand_over(folder, 2, start=100)
    with Dequeuer(folder) as consumer:
        assert consumer.peek(10) == [100, 101]


def test_peek_checks_its_argument(folder):
    with Dequeuer(folder) as consumer:
        for bad in (0, -1, "3", 1.5):
            with pytest.raises(ValueError, match="n must be a positive integer"):
                consumer.peek(bad)
    with pytest.raises(ValueError, match="closed"):
        consumer.peek()


# -- clear -----------------------------------------------------------------------------------


def test_queue_clear_removes_what_waits_from_every_process():
    q = Queue()
    try:
        child = multiprocessing.get_context("spawn").Process(target=_put_in_child, args=(q, list(range(500))))
        child.start()
        child.join()
        q.put_many(["mine"] * 7)  # this process's own batch, not handed over yet
        assert q.qsize() == 507
        assert q.clear() == 507
        assert q.qsize() == 0 and q.empty()
        with pytest.raises(queue.Empty):
            q.get_nowait()
        q.put("after")
        assert q.get(timeout=5) == "after"
    finally:
        q.close()


def test_clear_removes_what_this_consumer_holds_and_has_not_returned(folder):
    hand_over(folder, 50, 20)
    with Dequeuer(folder) as consumer:
        assert consumer.get_many(10, timeout=5) == list(range(10))
        assert consumer.clear() == 60
        with pytest.raises(queue.Empty):
            consumer.get(timeout=0.1)
    assert os.listdir(folder) == []


def test_clear_leaves_the_batches_live_processes_hold(folder, children):
    hand_over(folder, 50)
    producer = children(PRODUCER_HOLDING, folder, ready="holding")  # its loading_ batch: 5 items
    consumer = children(CONSUMER_HOLDING, folder, "49")
    assert consumer.expect("got") == "0"  # it holds the batch of 50 (chosen_)
    hand_over(folder, 30, start=1000)
    with Dequeuer(folder) as clearing:
        assert clearing.clear() == 30  # only the ready_ batch
        assert len(listing(folder)["loading"]) == 1 and len(listing(folder)["chosen"]) == 1
        consumer.send()
        assert consumer.expect("rest") == "49"  # the other consumer delivered its batch
        producer.send()
        producer.expect("handed over")
        assert clearing.get_many(10, timeout=5) == ["live"] * 5  # the producer's items came later
    assert producer.finish() == 0 and consumer.finish() == 0


def test_clear_removes_a_dead_processs_batch_and_keeps_bad_files(folder):
    name, = hand_over(folder, 8)
    os.rename(os.path.join(folder, name), os.path.join(folder, name.replace("ready_", "chosen_", 1)))  # an orphan
    bad = set_aside(folder, ["kept"], "for a person")
    with Dequeuer(folder) as consumer:
        assert consumer.clear() == 8
    assert os.listdir(folder) == [bad]


def test_joinable_queue_join_waits_for_no_cleared_item():
    q = JoinableQueue()
    try:
        q.put_many(list(range(10)))
        q.get(timeout=5)
        assert q.clear() == 9
        q.task_done()
        joined = threading.Thread(target=q.join, daemon=True)
        joined.start()
        joined.join(timeout=10)
        assert not joined.is_alive()
        with pytest.raises(ValueError, match="too many"):
            q.task_done()
    finally:
        q.close()


def test_clear_refuses_to_drop_unacknowledged_items(folder):
    hand_over(folder, 10)
    with Dequeuer(folder, auto_ack=False) as consumer:
        consumer.get_many(3, timeout=5)
        with pytest.raises(ValueError, match="3 items returned and not acknowledged"):
            consumer.clear()
        consumer.ack()
        assert consumer.clear() == 7
    assert os.listdir(folder) == []
    with Enqueuer(folder) as producer:
        producer.put("x")
    with pytest.raises(ValueError, match="closed"):
        consumer.clear()
