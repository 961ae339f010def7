"""The same checks against multiprocessing.Queue and turbo_queue.Queue.

Where turbo_queue differs on purpose (README, "Differences from multiprocessing.Queue"), the
check asserts the difference for each.
"""

from __future__ import annotations

import concurrent.futures
import gc
import multiprocessing
import pickle
import queue
import weakref

import pytest

import turbo_queue

from tests.support import run_python

METHODS = [m for m in ("fork", "spawn", "forkserver") if m in multiprocessing.get_all_start_methods()]


class Custom:
    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return type(other) is Custom and other.value == self.value


class NotPicklable:
    def __reduce__(self):
        raise AttributeError("no pickling here")


@pytest.fixture(params=["multiprocessing", "turbo_queue"])
def kind(request):
    return request.param


def make(kind, *args, method="fork", **kwargs):
    if kind == "multiprocessing":
        return multiprocessing.get_context(method).Queue(*args, **kwargs)
    return turbo_queue.Queue(*args, **kwargs)


def test_fifo_and_pickle_semantics(kind):
    q = make(kind)
    items = [1, "two", (3, 4), [5], {"six": 6}, Custom(7), None, b"\x08"]
    for item in items:
        q.put(item)
    got = [q.get(timeout=10) for _ in items]
    assert got == items and type(got[2]) is tuple
    q.close()


def test_maxsize_qsize_empty_full(kind):
    q = make(kind, 2)
    assert q.empty() and not q.full() and q.qsize() == 0
    q.put(1)
    q.put(2)
    assert q.full() and q.qsize() == 2
    if kind == "turbo_queue":  # counted at put() time; multiprocessing's empty() looks at its
        assert not q.empty()   # pipe and may say True until the feeder thread has written
    with pytest.raises(queue.Full):
        q.put(3, block=False)
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.01)
    assert q.get(timeout=10) == 1
    q.put_nowait(3)
    assert [q.get(timeout=10), q.get(timeout=10)] == [2, 3]  # get_nowait may beat multiprocessing's feeder
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)
    q.close()


def test_put_and_get_after_close_say_is_closed(kind):
    q = make(kind)
    q.close()
    with pytest.raises(ValueError, match="is closed"):
        q.put(1)
    with pytest.raises(ValueError, match="is closed"):
        q.get()
    q.close()


def test_negative_timeout(kind):
    q = make(kind)
    if kind == "multiprocessing":
        with pytest.raises(queue.Empty):  # multiprocessing treats it as zero
            q.get(timeout=-1)
    else:
        with pytest.raises(ValueError, match="non-negative"):  # as queue.Queue does
            q.get(timeout=-1)
    q.close()


def test_an_unpicklable_put(kind):
    q = make(kind)
    if kind == "multiprocessing":
        q.put(NotPicklable())  # accepted; the feeder thread fails later and the item vanishes
    else:
        with pytest.raises(TypeError, match="'NotPicklable'"):
            q.put(NotPicklable())
    q.put("next")
    assert q.get(timeout=10) == "next"
    q.close()


def test_get_keeps_no_reference_to_a_returned_item(kind):
    q = make(kind)
    for i in range(5):
        q.put(Custom(i))
    for i in range(5):
        item = q.get(timeout=10)
        ref = weakref.ref(item)
        del item
        gc.collect()
        assert ref() is None
    q.close()


def test_pickling_outside_of_spawning(kind):
    q = make(kind)
    if kind == "multiprocessing":
        with pytest.raises(RuntimeError, match="through inheritance"):
            pickle.dumps(q)
    else:  # carries the folder and settings: any process can open it, at any time
        copy = pickle.loads(pickle.dumps(q))
        q.put("through the copy")
        assert copy.get(timeout=10) == "through the copy"
        copy.close()
    q.close()


def _producer(q, start):
    for i in range(start, start + 50):
        q.put(i)
    # exits without close(): the items must not be lost


def _grandparent(q):
    child = multiprocessing.Process(target=_producer, args=(q, 1000))
    child.start()
    child.join()
    q.put("grandparent done")


@pytest.mark.parametrize("method", METHODS)
def test_children_with_every_start_method(kind, method):
    q = make(kind, method=method)
    ctx = multiprocessing.get_context(method)
    procs = [ctx.Process(target=_producer, args=(q, i * 100)) for i in range(3)]
    procs.append(ctx.Process(target=_grandparent, args=(q,)))
    for p in procs:
        p.start()
    got = [q.get(timeout=30) for _ in range(3 * 50 + 50 + 1)]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert sorted(x for x in got if isinstance(x, int)) == sorted(
        [i for s in (0, 100, 200, 1000) for i in range(s, s + 50)]
    )
    assert "grandparent done" in got
    q.close()


def _take_one(q, out):
    out.put(q.get(timeout=30))


@pytest.mark.parametrize("method", METHODS)
def test_a_consumer_that_exits_leaves_the_rest(kind, method):
    q = make(kind, method=method)
    for i in range(5):
        q.put(i)
    if kind == "turbo_queue":
        q.flush()
    ctx = multiprocessing.get_context(method)
    out = ctx.Queue()
    child = ctx.Process(target=_take_one, args=(q, out))
    child.start()
    first = out.get(timeout=30)
    child.join(30)
    assert first == 0 and child.exitcode == 0
    assert [q.get(timeout=30) for _ in range(4)] == [1, 2, 3, 4]
    q.close()


_worker_queue = None


def _init_worker(q):
    global _worker_queue
    _worker_queue = q


def _work(x):
    _worker_queue.put(x * x)
    return x


@pytest.mark.parametrize("method", METHODS)
def test_pool_and_executor_initializers(kind, method):
    q = make(kind, method=method)
    ctx = multiprocessing.get_context(method)
    pool = ctx.Pool(2, initializer=_init_worker, initargs=(q,))
    try:
        assert sorted(pool.map(_work, range(5))) == list(range(5))
        pool.close()  # workers exit normally and flush; terminate() (the with-block) kills them
        pool.join()
    finally:
        pool.terminate()
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx, initializer=_init_worker, initargs=(q,)) as ex:
        assert sorted(ex.map(_work, range(5, 10))) == list(range(5, 10))
    got = sorted(q.get(timeout=30) for _ in range(10))
    assert got == [x * x for x in range(10)]
    q.close()


def test_separate_programs_share_a_named_queue_and_its_counts(tmp_path):
    # multiprocessing.Queue cannot do this at all: it lives in its creator's pipes.
    path = str(tmp_path / "shared")
    q = turbo_queue.Queue(3, path=path)
    run_python(
        """
        import sys, turbo_queue
        q = turbo_queue.Queue(3, path=sys.argv[1])
        q.put("from another program")
        q.put(2)
        assert q.qsize() == 2, q.qsize()
        """,
        path,
    )
    assert q.qsize() == 2 and not q.empty() and not q.full()
    q.put(3)
    assert q.full()
    with pytest.raises(queue.Full):
        q.put(4, block=False)
    assert q.get(timeout=10) == "from another program"
    q.close()


def test_put_many_and_get_many(tmp_path):
    with turbo_queue.Queue() as q:
        q.put_many(range(250))
        got = []
        while len(got) < 250:
            got.extend(q.get_many(100, timeout=10))
        assert got == list(range(250)) and q.empty()


def test_a_folder_removed_before_exit_gets_a_warning_per_queue_not_a_traceback(tmp_path):
    result = run_python(
        """
        import shutil, sys, turbo_queue
        q = turbo_queue.Queue(path=sys.argv[1])
        q.put(1)
        assert q.get(timeout=10) == 1
        q.put(2)
        shutil.rmtree(sys.argv[1])
        """,
        str(tmp_path / "q"),
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert "is gone (was the folder removed?)" in result.stderr, result.stderr


def test_a_temporary_queue_folder_goes_when_its_creator_exits(tmp_path):
    result = run_python(
        """
        import turbo_queue
        q = turbo_queue.Queue()
        q.put(1)
        print(q.path)
        """
    )
    path = result.stdout.strip()
    assert path.startswith(turbo_queue._platform.fast_temp_root())
    import os

    assert not os.path.exists(path)
