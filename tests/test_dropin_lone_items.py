"""A lone item goes at once, and ``empty()`` agrees with ``get_nowait()`` (issue 14, traps 1 and 2).

A producer whose previous batch a consumer has claimed hands a lone item over before ``put()``
returns; a streaming producer keeps filling its batch. The checks look at the folder right after
a call returns (with an hour-long ``max_batch_delay``, so no timer can have rolled anything):
they assert states, never durations.
"""

from __future__ import annotations

import multiprocessing
import queue
import time

import pytest

import turbo_queue
from turbo_queue import Dequeuer, Enqueuer

from tests.support import DEADLINE, listing

HOUR = 3600.0


def _ready_and_pending(folder, producer):
    """How many batches wait as ready_, and how many items the producer still holds."""
    return len(listing(folder)["ready"]), producer.pending


def test_a_lone_item_goes_at_once_once_the_previous_batch_was_claimed(folder):
    with Enqueuer(folder, max_batch_delay=HOUR) as producer, Dequeuer(folder) as consumer:
        producer.put("first")
        assert _ready_and_pending(folder, producer) == (0, 1)  # a new producer has no claimed batch: it batches
        producer.flush()
        assert consumer.get(timeout=DEADLINE) == "first"  # claims the batch
        producer.put("second")
        assert _ready_and_pending(folder, producer) == (1, 0)  # handed over before put() returned
        assert consumer.get(timeout=DEADLINE) == "second"
        producer.put("third")
        assert _ready_and_pending(folder, producer) == (1, 0)
        assert consumer.get(timeout=DEADLINE) == "third"


def test_a_streaming_producer_keeps_filling_its_batch(folder):
    with Enqueuer(folder, max_batch_delay=HOUR) as producer, Dequeuer(folder) as consumer:
        producer.put(0)
        producer.flush()
        assert consumer.get(timeout=DEADLINE) == 0
        producer.put(1)  # alone: at once
        for i in range(2, 50):  # its batch is not claimed yet: these are batched
            producer.put(i)
        assert _ready_and_pending(folder, producer) == (1, 48)
        producer.flush()
        assert [consumer.get(timeout=DEADLINE) for _ in range(49)] == list(range(1, 50))


def test_put_many_is_never_a_lone_item(folder):
    with Enqueuer(folder, max_batch_delay=HOUR) as producer, Dequeuer(folder) as consumer:
        producer.put(0)
        producer.flush()
        assert consumer.get(timeout=DEADLINE) == 0
        producer.put_many([1, 2, 3])
        assert _ready_and_pending(folder, producer) == (0, 3)


def _consume(path, count, got):
    with Dequeuer(path) as consumer:
        for _ in range(count):
            got.put(consumer.get(timeout=DEADLINE))


def test_request_and_response_across_processes_need_no_flush_and_no_timer(folder):
    ctx = multiprocessing.get_context("fork")
    got = ctx.SimpleQueue()
    consumer = ctx.Process(target=_consume, args=(folder, 20, got))
    consumer.start()
    try:
        with Enqueuer(folder, max_batch_delay=HOUR) as producer:
            producer.put(0)
            producer.flush()  # the first batch of a new producer waits for its timer
            assert got.get() == 0
            for i in range(1, 20):
                producer.put(i)
                assert producer.pending == 0  # handed over, not waiting for the hour
                assert got.get() == i
    finally:
        consumer.join(DEADLINE)
    assert consumer.exitcode == 0


# -- empty() and get_nowait() agree -----------------------------------------------------------

@pytest.fixture(params=["multiprocessing", "turbo_queue"])
def make_queue(request):
    if request.param == "multiprocessing":
        return multiprocessing.get_context("fork").Queue
    return turbo_queue.Queue


def _put_every_100_ms(q, count):
    for i in range(count):
        q.put(i)
        time.sleep(0.1)


def test_get_nowait_gets_what_empty_says_is_there(make_queue):
    """The drain loop of a program written for multiprocessing.Queue, against a slow producer."""
    q = make_queue()
    producer = multiprocessing.get_context("fork").Process(target=_put_every_100_ms, args=(q, 20))
    producer.start()
    got, refused = [], 0
    deadline = time.monotonic() + DEADLINE
    while len(got) < 20 and time.monotonic() < deadline:
        if not q.empty():
            try:
                got.append(q.get_nowait())
            except queue.Empty:
                refused += 1
        time.sleep(0.001)
    producer.join(DEADLINE)
    assert refused == 0
    assert got == list(range(20))


def test_get_nowait_on_an_empty_queue_says_empty_at_once():
    q = turbo_queue.Queue(max_batch_delay=HOUR)
    with pytest.raises(queue.Empty):
        q.get_nowait()  # nothing counted: no wait for the hour
    with pytest.raises(queue.Empty):
        q.get_many(10, block=False)
    q.close()
