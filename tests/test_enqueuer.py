"""Enqueuer: batching, the roll timer, flush on close and exit, backpressure, bad settings."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import sqlite3
import threading
import time

import pytest

from turbo_queue import Dequeuer, Enqueuer, _batchfile
from turbo_queue._platform import is_locked

from tests.support import drain, listing, run_python, wait_for

START_METHODS = [m for m in ("fork", "spawn", "forkserver") if m in multiprocessing.get_all_start_methods()]


def items_in(path: str) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT value FROM meta WHERE key = 'count'").fetchone()[0]
    finally:
        conn.close()


def test_a_batch_rolls_when_it_holds_batch_size_items(folder):
    with Enqueuer(folder, batch_size=10, chunk_size=3, max_batch_delay=60) as enqueuer:
        for i in range(25):
            enqueuer.put(i)
        files = listing(folder)
        assert len(files["ready"]) == 2 and len(files["loading"]) == 1
        assert [items_in(os.path.join(folder, f)) for f in files["ready"]] == [10, 10]
    assert drain(folder) == list(range(25))


def test_put_many_rolls_on_size_too_and_keeps_order_with_single_puts(folder):
    with Enqueuer(folder, batch_size=100, chunk_size=30, max_batch_delay=60) as enqueuer:
        enqueuer.put("first")
        enqueuer.put_many(range(250))
        enqueuer.put("last")
        assert len(listing(folder)["ready"]) == 2
    assert drain(folder) == ["first", *range(250), "last"]


def test_the_timer_rolls_a_batch_when_no_more_items_come(folder):
    with Enqueuer(folder, max_batch_delay=0.05) as enqueuer:
        enqueuer.put("lonely")
        assert listing(folder)["ready"] == []
        wait_for(lambda: listing(folder)["ready"], "the timer to roll the batch")
        assert listing(folder)["loading"] == []
        enqueuer.put("second")  # the timer keeps working for the next batch
        wait_for(lambda: len(listing(folder)["ready"]) == 2, "the second roll")
    assert drain(folder) == ["lonely", "second"]


def test_a_batch_that_begins_wakes_the_timer_only_once_it_sleeps(folder):
    """A new batch's deadline is later than any the timer waits for: the timer lingers one delay
    after a roll, then sleeps, and only a batch begun while it sleeps has to wake it."""
    with Enqueuer(folder, max_batch_delay=0.1) as enqueuer:
        woken = []
        notify = enqueuer._cond.notify
        enqueuer._cond.notify = lambda n=1: (woken.append(n), notify(n))  # type: ignore[method-assign]
        enqueuer.put("first")  # starts the timer
        enqueuer.flush()
        enqueuer.put("second")  # the timer waits for the first batch's deadline
        wait_for(lambda: enqueuer.pending == 0, "the timer to roll a batch begun while it waited")
        enqueuer.put("third")  # the timer lingers after its roll
        wait_for(lambda: enqueuer.pending == 0, "the timer to roll a batch begun while it lingered")
        assert woken == []
        wait_for(lambda: enqueuer._timer_idle, "the timer to sleep")
        enqueuer.put("fourth")
        assert woken == [1]
        wait_for(lambda: enqueuer.pending == 0, "the timer to roll a batch begun while it slept")
    assert drain(folder) == ["first", "second", "third", "fourth"]


def test_while_batches_wait_the_timer_lets_a_batch_fill_for_up_to_ten_delays(folder):
    """Consumers are busy while ready_ files wait: small batches would only add files to read."""
    with Enqueuer(folder, max_batch_delay=0.5) as enqueuer:
        enqueuer.put("waiting")
        enqueuer.flush()
        enqueuer.put("filling")
        time.sleep(1.5)  # three delays, well inside the ten it may wait
        assert len(listing(folder)["ready"]) == 1 and enqueuer.pending == 1
        with Dequeuer(folder) as consumer:  # a consumer takes the waiting batch: the timer rolls
            assert consumer.get(timeout=5) == "waiting"
            assert consumer.get(timeout=10) == "filling"
        enqueuer.put("alone")
        enqueuer.put("again")
        enqueuer.flush()
        enqueuer.put("patience ends")  # nobody takes the batch that waits: the timer still rolls
        wait_for(lambda: enqueuer.pending == 0, "the roll after ten delays")
    assert drain(folder) == ["alone", "again", "patience ends"]


def test_loading_file_is_locked_by_its_producer_until_it_rolls(folder):
    with Enqueuer(folder, max_batch_delay=60, chunk_size=1) as enqueuer:
        enqueuer.put(1)
        (loading,) = listing(folder)["loading"]
        assert is_locked(os.path.join(folder, loading)) is True
        enqueuer.flush()
        (ready,) = listing(folder)["ready"]
        assert ready.split("_", 1)[1] == loading.split("_", 1)[1]  # epoch and uuid kept
        assert is_locked(os.path.join(folder, ready)) is False
        assert [n for n in os.listdir(folder) if n.endswith(("-journal", "-wal", "-shm"))] == []


def test_flush_and_close_hand_over_the_partial_batch(folder):
    enqueuer = Enqueuer(folder, max_batch_delay=60)
    enqueuer.put("a")
    enqueuer.flush()
    assert len(listing(folder)["ready"]) == 1
    enqueuer.flush()  # nothing pending: no empty batch
    assert len(listing(folder)["ready"]) == 1
    enqueuer.put("b")
    enqueuer.close()
    enqueuer.close()  # twice is fine
    assert enqueuer.closed
    with pytest.raises(ValueError, match="is closed"):
        enqueuer.put("c")
    with pytest.raises(ValueError, match="is closed"):
        enqueuer.put_many(["c"])
    assert drain(folder) == ["a", "b"]


def test_a_program_that_exits_without_close_flushes_its_batch(folder):
    run_python(
        """
        import sys, turbo_queue
        q = turbo_queue.Enqueuer(sys.argv[1], max_batch_delay=3600)
        q.put_many(range(5))
        q.put("end")
        """,
        folder,
    )
    assert listing(folder)["loading"] == []
    assert drain(folder) == [0, 1, 2, 3, 4, "end"]


def _child_puts(enqueuer, items):
    for item in items:
        enqueuer.put(item)
    # no close(): a normal exit of a multiprocessing child must flush


def _child_creates_and_puts(folder, items):
    enqueuer = Enqueuer(folder, max_batch_delay=3600)
    for item in items:
        enqueuer.put(item)


@pytest.mark.parametrize("method", START_METHODS)
def test_a_multiprocessing_child_flushes_at_normal_exit(folder, method):
    ctx = multiprocessing.get_context(method)
    inherited = Enqueuer(folder, max_batch_delay=3600)
    try:
        procs = [ctx.Process(target=_child_puts, args=(inherited, ["p1", "p2"])),
                 ctx.Process(target=_child_creates_and_puts, args=(folder, ["c1"]))]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
    finally:
        inherited.close()
    assert sorted(drain(folder)) == ["c1", "p1", "p2"]


def test_a_forked_child_never_flushes_its_parents_items_again(folder):
    ctx = multiprocessing.get_context("fork")
    with Enqueuer(folder, max_batch_delay=3600, chunk_size=2) as enqueuer:
        enqueuer.put_many(["parent1", "parent2", "parent3"])  # a chunk written, one item buffered
        child = ctx.Process(target=_child_puts, args=(enqueuer, ["child"]))
        child.start()
        child.join(60)
        assert child.exitcode == 0
        enqueuer.put("parent4")
    assert sorted(drain(folder)) == ["child", "parent1", "parent2", "parent3", "parent4"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_os_fork_without_multiprocessing(folder):
    # In a separate program, so that the child leaves through a real interpreter exit (atexit).
    run_python(
        """
        import os, sys, turbo_queue
        enqueuer = turbo_queue.Enqueuer(sys.argv[1], max_batch_delay=3600)
        enqueuer.put("before fork")
        pid = os.fork()
        if pid == 0:
            enqueuer.put("from child")
            sys.exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        enqueuer.put("after fork")
        """,
        folder,
    )
    assert sorted(drain(folder)) == ["after fork", "before fork", "from child"]


def test_backpressure_waits_raises_full_and_reports_active(folder):
    with Enqueuer(folder, batch_size=1, max_ready_files=2, max_batch_delay=60) as enqueuer:
        assert enqueuer.active
        enqueuer.put(1)
        enqueuer.put(2)
        assert len(listing(folder)["ready"]) == 2
        assert not enqueuer.active
        with pytest.raises(queue.Full):
            enqueuer.put(3, block=False)
        with pytest.raises(queue.Full):
            enqueuer.put(3, timeout=0.05)
        with pytest.raises(queue.Full):
            enqueuer.put_many([3, 4], block=False)
        with pytest.raises(ValueError, match="non-negative"):
            enqueuer.put(3, timeout=-1)
        got = []

        def consume():
            with Dequeuer(folder) as dequeuer:
                got.append(dequeuer.get(timeout=10))

        thread = threading.Thread(target=consume)
        thread.start()
        enqueuer.put(3)  # blocks until the consumer took a batch
        thread.join()
        assert got == [1]
    assert drain(folder) == [2, 3]


@pytest.mark.parametrize(
    "setting,value,message",
    [
        ("batch_size", 0, "batch_size must be a positive integer"),
        ("batch_size", 1.5, "batch_size must be a positive integer"),
        ("chunk_size", -1, "chunk_size must be a positive integer"),
        ("max_ready_files", 0, "max_ready_files must be a positive integer"),
        ("max_batch_delay", 0, "max_batch_delay must be a positive number"),
        ("max_batch_delay", "1", "max_batch_delay must be a positive number"),
        ("codec", "yaml", "unknown codec 'yaml'"),
        ("durable", "no", "durable must be True or False, got 'no'"),
        ("allow_network_fs", 1, "allow_network_fs must be True or False"),
    ],
)
def test_bad_settings_are_refused_at_construction(folder, setting, value, message):
    with pytest.raises(ValueError, match=message):
        Enqueuer(folder, **{setting: value})
    assert os.listdir(folder) == []


def test_the_folder_is_created_when_missing(tmp_path):
    path = tmp_path / "a" / "b"
    with Enqueuer(path) as enqueuer:
        enqueuer.put(1)
    assert path.is_dir() and drain(str(path)) == [1]


def test_a_pickled_enqueuer_carries_its_folder_and_settings_only(folder):
    with Enqueuer(folder, batch_size=7, codec="json", max_batch_delay=3600) as enqueuer:
        enqueuer.put("unflushed")
        copy = pickle.loads(pickle.dumps(enqueuer))
        try:
            assert (copy.folder, copy.batch_size, copy.codec) == (folder, 7, "json")
            copy.put("copy")
        finally:
            copy.close()
    assert sorted(drain(folder)) == ["copy", "unflushed"]


def test_durable_batches_round_trip(folder):
    with Enqueuer(folder, durable=True, batch_size=3) as enqueuer:
        enqueuer.put_many(range(10))
    assert drain(folder) == list(range(10))


def _batch_file(folder):
    """Schema and meta of the one ready_ batch in ``folder``."""
    (name,) = listing(folder)["ready"]
    conn = sqlite3.connect(f"file:{os.path.join(folder, name)}?mode=ro", uri=True)
    try:
        schema = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        return schema, dict(conn.execute("SELECT key, value FROM meta"))
    finally:
        conn.close()


def _batch_meta_of_child(folder, out):
    with Enqueuer(folder, codec="json") as enqueuer:
        enqueuer.put("child")
    out.put(os.getpid())


@pytest.mark.parametrize("codec", ["pickle", "json", "raw"])
def test_a_batch_made_in_memory_equals_one_written_in_its_file(folder, codec, monkeypatch):
    made = []

    def one_batch() -> None:
        with Enqueuer(folder, codec=codec) as enqueuer:
            enqueuer.put_many(["a", "b"])
        made.append(_batch_file(folder))
        assert drain(folder) == ["a", "b"]

    one_batch()  # held in memory, its file written at once at the roll
    monkeypatch.setattr(_batchfile, "IMAGE_LIMIT", 0)  # outgrown at the first chunk: written in its file
    one_batch()
    monkeypatch.setattr(_batchfile, "_CAN_IMAGE", False)  # as where sqlite3 cannot serialize
    one_batch()
    assert made[0] == made[1] == made[2]
    assert made[0][1]["codec"] == codec and made[0][1]["count"] == 2
    assert made[0][1]["created_by"].endswith(f":{os.getpid()}")


def test_a_forked_child_names_itself_in_its_batches(folder):
    with Enqueuer(folder, codec="json") as enqueuer:
        enqueuer.put("parent")  # the parent's empty file is made
    assert drain(folder) == ["parent"]
    ctx = multiprocessing.get_context("fork")
    out = ctx.SimpleQueue()
    child = ctx.Process(target=_batch_meta_of_child, args=(folder, out))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert _batch_file(folder)[1]["created_by"].endswith(f":{out.get()}")


HOUR_DELAY = 3600.0


def _roll_past_a_file_size_limit(folder, many, out):
    """Roll a batch made in memory while this process may not write files above 16 KiB (a real
    EFBIG from write()), then lift the limit and put one more."""
    import resource
    import signal

    from turbo_queue import BatchWriteError

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    with Enqueuer(folder, max_batch_delay=HOUR_DELAY) as producer:
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, hard))
        try:
            if many:
                producer.put_many([f"{i:04d}" * 250 for i in range(100)])  # a chunk: the batch has its loading_ file
            else:
                producer.put("x" * 50_000)  # fewer items than a chunk: no loading_ file before the roll
            producer.flush()
        except BatchWriteError as exc:
            out.put(("failed", exc.items, sorted(os.listdir(folder))))
        else:
            out.put(("handed over", 0, []))
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        producer.put("after")


@pytest.mark.parametrize("many", [False, True])
def test_a_batch_made_in_memory_that_cannot_be_written_is_lost_whole_and_leaves_nothing(folder, many):
    ctx = multiprocessing.get_context("fork")
    out = ctx.SimpleQueue()
    child = ctx.Process(target=_roll_past_a_file_size_limit, args=(folder, many, out))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert out.get() == ("failed", 100 if many else 1, [])  # R8: nothing partial, no file left behind
    assert drain(folder) == ["after"]
