"""Dequeuer: claim in hand-over order, read, acknowledge, hand back, and carry on past bad files."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import pickle
import queue
import sqlite3
import threading
import zlib

import pytest

from turbo_queue import Dequeuer, Enqueuer, _batchfile, _folder, _watch
from turbo_queue._platform import is_locked

from tests.support import listing, run_python, wait_for


def put_batches(folder, *batches, codec="pickle"):
    """Hand over each list of items as one batch, in order."""
    with Enqueuer(folder, max_batch_delay=3600, codec=codec, chunk_size=4) as enqueuer:
        for batch in batches:
            enqueuer.put_many(batch)
            enqueuer.flush()


def acked_of(path):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT value FROM meta WHERE key = 'acked'").fetchone()[0]
    finally:
        conn.close()


def test_the_claimed_batch_is_read_without_taking_the_folders_events(folder):
    put_batches(folder, list(range(12)), list(range(12, 16)))  # chunks of 4: three, then one
    events = _watch.events(os.path.abspath(folder))
    looks = []
    mark = events.mark
    events.mark = lambda arrivals=False: (looks.append(arrivals), mark(arrivals))[1]  # type: ignore[method-assign]
    with Dequeuer(folder) as consumer:
        assert [consumer.get_many(4) for _ in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
        assert len(looks) == 1  # before the claim; its other chunks came from the file in hand
        assert consumer.get_many(4) == [12, 13, 14, 15]
        assert len(looks) == 2  # before the next claim


def test_items_come_in_hand_over_order_across_producers(folder):
    a = Enqueuer(folder, max_batch_delay=3600)
    b = Enqueuer(folder, max_batch_delay=3600)
    try:
        for i in range(6):  # alternate: the epoch is the same second, ctime breaks the tie
            (a if i % 2 else b).put(i)
            (a if i % 2 else b).flush()
    finally:
        a.close()
        b.close()
    with Dequeuer(folder) as dequeuer:
        assert [dequeuer.get(timeout=5) for _ in range(6)] == list(range(6))


def test_get_many_returns_at_most_max_items_and_at_least_one(folder):
    put_batches(folder, list(range(10)), list(range(10, 13)))
    with Dequeuer(folder) as dequeuer:
        assert dequeuer.get_many(4) == [0, 1, 2, 3]
        assert dequeuer.get_many(100) == [4, 5, 6, 7, 8, 9]  # the rest of the batch in hand
        assert dequeuer.get_many(100) == [10, 11, 12]
        with pytest.raises(queue.Empty):
            dequeuer.get_many(5, block=False)
        with pytest.raises(ValueError, match="max_items must be a positive integer"):
            dequeuer.get_many(0)
    assert listing(folder)["ready"] == [] and listing(folder)["chosen"] == []


def test_empty_timeout_and_bad_arguments(folder):
    with Dequeuer(folder) as dequeuer:
        with pytest.raises(queue.Empty):
            dequeuer.get(block=False)
        with pytest.raises(queue.Empty):
            dequeuer.get(timeout=0.01)
        with pytest.raises(ValueError, match="non-negative"):
            dequeuer.get(timeout=-1)
    with pytest.raises(ValueError, match="is closed"):
        dequeuer.get()
    with pytest.raises(ValueError, match="is closed"):
        dequeuer.get_many(1)
    with pytest.raises(ValueError, match="ack_every must be a positive integer"):
        Dequeuer(folder, ack_every=0)
    with pytest.raises(ValueError, match="max_crashes must be a positive integer"):
        Dequeuer(folder, max_crashes=0)
    with pytest.raises(ValueError, match="durable must be True or False, got 'no'"):
        Dequeuer(folder, durable="no")


def test_a_waiting_consumer_wakes_when_a_batch_arrives(folder):
    got = []
    with Dequeuer(folder) as dequeuer:
        thread = threading.Thread(target=lambda: got.append(dequeuer.get(timeout=30)))
        thread.start()
        with Enqueuer(folder) as enqueuer:
            enqueuer.put("wake up")
        thread.join(30)
    assert got == ["wake up"]


def hold(folder, filename):
    """Lock a batch file as another process would (its producer just after the rename); the descriptor."""
    fd = os.open(os.path.join(folder, filename), os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_a_waiting_consumer_looks_again_when_a_held_ready_file_is_let_go(folder):
    # Whoever renames a batch to ready_ (its producer, a consumer handing it back, recovery) holds
    # its lock for an instant after the rename, whose event has already woken the consumers: no
    # event says when it lets go, so a consumer that found the file held must look again on its own.
    put_batches(folder, ["late"])
    (ready,) = listing(folder)["ready"]
    fd = hold(folder, ready)
    got = []
    with Dequeuer(folder) as dequeuer:
        thread = threading.Thread(target=lambda: got.append(dequeuer.get(timeout=60)), daemon=True)
        try:
            thread.start()
            wait_for(lambda: dequeuer._held_wait, "the consumer to find the file held", interval=0.01)
            assert got == [] and listing(folder)["ready"] == [ready]
        finally:
            os.close(fd)  # let go, without a rename
        thread.join(10)  # waiting for an event instead would take the whole minute
        assert got == ["late"]


def test_claim_takes_a_free_ready_file_and_says_when_all_were_held(folder):
    put_batches(folder, ["a"], ["b"], ["c"])
    first, second, third = _folder.ready_in_order(folder)
    fds = [hold(folder, first), hold(folder, third)]
    try:
        batch = _folder.claim(folder)
        assert batch is not None and batch.name == _folder.parse_name(second).as_state(_folder.CHOSEN)
        batch.unlock()
        with pytest.raises(_folder.Held):
            _folder.claim(folder)  # the chosen_ one is not a candidate; both ready_ ones are held
        assert _folder.claim(folder, frozenset({first, third})) is None  # skipped ones are not held ones
    finally:
        for fd in fds:
            os.close(fd)
    assert sorted(listing(folder)["ready"]) == sorted([first, third])


def _signal_and_wait(started, stop):
    started.set()
    stop.wait(60)


def test_a_forked_child_never_keeps_a_batch_lock_of_its_parent(folder):
    # Whoever holds the batch in the parent (here a bare one, as recovery or a hand-back under way
    # in another thread hold theirs): once the parent lets go, the file must be free.
    put_batches(folder, ["x"])
    (ready,) = listing(folder)["ready"]
    batch = _folder.take(folder, ready, _folder.READY, _folder.READY)
    assert batch is not None
    ctx = multiprocessing.get_context("fork")
    started, stop = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_signal_and_wait, args=(started, stop))
    child.start()
    try:
        assert started.wait(60)  # the child runs: its fork hooks are done
        batch.unlock()
        assert is_locked(os.path.join(folder, ready)) is False
    finally:
        stop.set()
        child.join(60)


def test_the_claimed_batch_is_chosen_and_locked_and_deleted_when_done(folder):
    put_batches(folder, [1, 2, 3])
    with Dequeuer(folder) as dequeuer:
        assert dequeuer.get() == 1
        (chosen,) = listing(folder)["chosen"]
        assert listing(folder)["ready"] == []
        assert is_locked(os.path.join(folder, chosen)) is True
        assert dequeuer.get_many(5) == [2, 3]
        with pytest.raises(queue.Empty):
            dequeuer.get(block=False)  # asking again acknowledges 2 and 3: the file goes
        assert os.listdir(folder) == []


def test_close_hands_the_rest_back_at_once_with_its_position(folder):
    put_batches(folder, list(range(10)))
    first = Dequeuer(folder)
    assert first.get_many(3) == [0, 1, 2]
    first.close()
    (ready,) = listing(folder)["ready"]
    assert acked_of(os.path.join(folder, ready)) == 3
    with Dequeuer(folder) as second:
        assert second.get_many(100) == list(range(3, 10))


def _descriptors_of(path):
    """How many descriptors this process has of the file at ``path``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.path.samefile(f"/proc/self/fd/{fd}", path)
        except OSError:
            pass  # the descriptor of the listing itself, closed meanwhile
    return count


def test_a_batch_read_in_part_is_closed_before_it_is_handed_back(folder, monkeypatch):
    put_batches(folder, list(range(40)))
    dequeuer = Dequeuer(folder, ack_every=4)
    assert [dequeuer.get() for _ in range(14)] == list(range(14))  # chunks and position records taking turns
    (chosen,) = listing(folder)["chosen"]
    assert _descriptors_of(os.path.join(folder, chosen)) == 2  # SQLite's and the lock's
    rename, at_rename = os.rename, []

    def watched_rename(source, target):
        at_rename.append(_descriptors_of(source))
        rename(source, target)

    monkeypatch.setattr(os, "rename", watched_rename)
    dequeuer.close()
    assert at_rename == [1]  # the lock's only: SQLite has closed the file (R1), the lock goes last (R4)
    monkeypatch.undo()
    (ready,) = listing(folder)["ready"]
    assert acked_of(os.path.join(folder, ready)) == 14
    with Dequeuer(folder, ack_every=3) as second:
        assert [second.get() for _ in range(26)] == list(range(14, 40))


def _take_one_and_exit(folder, out):
    dequeuer = Dequeuer(folder)
    out.put(dequeuer.get(timeout=10))
    # no close(): normal exit of a multiprocessing child hands the rest back


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_consumer_process_that_exits_takes_no_unread_items_with_it(folder, method):
    put_batches(folder, list(range(5)))
    ctx = multiprocessing.get_context(method)
    out = ctx.Queue()
    child = ctx.Process(target=_take_one_and_exit, args=(folder, out))
    child.start()
    assert out.get(timeout=30) == 0
    child.join(30)
    assert child.exitcode == 0
    with Dequeuer(folder) as dequeuer:
        assert dequeuer.get_many(100, timeout=5) == [1, 2, 3, 4]


def test_a_separate_program_that_exits_hands_back_too(folder):
    put_batches(folder, ["a", "b", "c"])
    result = run_python(
        """
        import sys, turbo_queue
        print(turbo_queue.Dequeuer(sys.argv[1]).get(timeout=10))
        """,
        folder,
    )
    assert result.stdout.strip() == "a"
    with Dequeuer(folder) as dequeuer:
        assert dequeuer.get_many(10, timeout=5) == ["b", "c"]


def test_acknowledged_position_is_saved_every_ack_every_items(folder):
    put_batches(folder, list(range(40)))
    dequeuer = Dequeuer(folder, ack_every=10)
    try:
        for _ in range(25):
            dequeuer.get()
        (chosen,) = listing(folder)["chosen"]
        saved = acked_of(os.path.join(folder, chosen))
        # saved when a chunk (4 items here) is read once 10 items were acknowledged
        assert 10 <= saved <= 25 and 25 - saved <= 10 + 4
    finally:
        dequeuer.close()


def test_a_corrupt_ready_file_becomes_bad_and_the_consumer_goes_on(folder):
    put_batches(folder, ["before"])
    bad = os.path.join(folder, "ready_1_00000000-0000-4000-8000-000000000000.db")
    with open(bad, "wb") as f:
        f.write(b"this is not a database" * 100)
    put_batches(folder, ["after"])
    with Dequeuer(folder) as dequeuer:
        got = dequeuer.get_many(10, timeout=5) + dequeuer.get_many(10, timeout=5)
    assert sorted(got) == ["after", "before"]
    assert listing(folder)["bad"] == ["bad_1_00000000-0000-4000-8000-000000000000.db"]


def _batch_with_its_tables_the_other_way_round(path, items):
    """A valid batch file whose ``items`` table was created before ``meta``: the same schema
    cookie as the usual layout, the two tables' pages swapped."""
    data = pickle.dumps(tuple(pickle.dumps(item) for item in items))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE items (first INTEGER PRIMARY KEY, n INTEGER NOT NULL, crc INTEGER NOT NULL, "
                 "data BLOB NOT NULL)")
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID")
    conn.executemany("INSERT INTO meta VALUES (?, ?)",
                     [("format", 2), ("codec", "pickle"), ("count", len(items)), ("acked", 0), ("created_by", "x:1")])
    conn.execute("INSERT INTO items VALUES (0, ?, ?, ?)", (len(items), zlib.crc32(data), data))
    conn.close()


def test_a_batch_laid_out_otherwise_is_read_right_after_one_of_the_usual_layout(folder):
    # Small batches are read in memory on connections kept for reuse, which keep the schema they
    # parsed: one must never be read with the schema of another file.
    put_batches(folder, ["usual"])
    with Dequeuer(folder) as dequeuer:
        assert dequeuer.get(timeout=5) == "usual"
        _batch_with_its_tables_the_other_way_round(
            os.path.join(folder, "ready_1_00000000-0000-4000-8000-000000000000.db"), ["other", "layout"])
        assert [dequeuer.get(timeout=5), dequeuer.get(timeout=5)] == ["other", "layout"]
    assert listing(folder)["bad"] == []


@pytest.mark.parametrize("items, in_memory", [(100, True), (3000, False)])
def test_a_small_batch_is_read_in_memory_and_a_larger_one_in_its_file(folder, items, in_memory):
    # Past READ_LIMIT, recording positions on the connection already open costs less than the
    # reads in memory save (the first record of a batch read in memory opens its file).
    sent = [f"item {i:05} " + "x" * 30 for i in range(items)]
    with Enqueuer(folder, batch_size=items, max_batch_delay=3600, chunk_size=10) as enqueuer:
        enqueuer.put_many(sent)
    (name,) = listing(folder)["ready"]
    assert (os.path.getsize(os.path.join(folder, name)) <= _batchfile.READ_LIMIT) is in_memory
    with Dequeuer(folder, ack_every=20) as dequeuer:
        got = []
        while len(got) < 60:
            got += dequeuer.get_many(10, timeout=5)
        reader = dequeuer._reader
        assert reader is not None and (reader._memory is not None) is in_memory
        conn = sqlite3.connect(reader.path)
        acked = conn.execute("SELECT value FROM meta WHERE key = 'acked'").fetchone()[0]
        conn.close()
        assert 20 <= acked <= 60  # recorded on the way, in the file either way
    assert got == sent[:60]


def test_a_newer_format_is_refused_and_left_as_it_is(folder, caplog):
    put_batches(folder, ["future"])
    (name,) = listing(folder)["ready"]
    path = os.path.join(folder, name)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = 4 WHERE key = 'format'")  # newer than format 3
    conn.commit()
    conn.close()
    before = open(path, "rb").read()
    put_batches(folder, ["now"])
    with Dequeuer(folder) as dequeuer:
        assert dequeuer.get(timeout=5) == "now"
        with pytest.raises(queue.Empty):
            dequeuer.get(timeout=0.05)
    assert listing(folder)["ready"] == [name]
    assert open(path, "rb").read() == before
    assert "format version 4 is not known" in caplog.text


def test_foreign_entries_are_left_alone(folder):
    os.mkdir(os.path.join(folder, "ready_2_00000000-0000-4000-8000-000000000001.db"))
    os.symlink("/etc/hostname", os.path.join(folder, "ready_3_00000000-0000-4000-8000-000000000002.db"))
    for name in ("notes.txt", "ready_bad_name.db", "ready_4_xyz.db"):
        with open(os.path.join(folder, name), "w") as f:
            f.write("not ours")
    foreign = sorted(os.listdir(folder))
    put_batches(folder, ["real"])
    with Dequeuer(folder) as dequeuer:
        assert dequeuer.get(timeout=5) == "real"
        with pytest.raises(queue.Empty):
            dequeuer.get(timeout=0.05)
    assert sorted(os.listdir(folder)) == foreign


def test_iteration_waits_for_items_and_ends_when_closed(folder):
    dequeuer = Dequeuer(folder)
    got = []

    def iterate():
        for item in dequeuer:
            got.append(item)

    thread = threading.Thread(target=iterate)
    thread.start()
    with Enqueuer(folder) as enqueuer:
        enqueuer.put_many([1, 2, 3])
    deadline = threading.Event()
    for _ in range(1000):
        if len(got) == 3:
            break
        deadline.wait(0.01)
    dequeuer.close()
    thread.join(10)
    assert not thread.is_alive() and got == [1, 2, 3]


def test_a_pickled_dequeuer_carries_its_folder_and_settings_only(folder):
    put_batches(folder, [1, 2])
    with Dequeuer(folder, ack_every=5, max_crashes=7) as dequeuer:
        assert dequeuer.get() == 1
        copy = pickle.loads(pickle.dumps(dequeuer))
        with copy:
            assert (copy.folder, copy.ack_every, copy.max_crashes) == (folder, 5, 7)
            with pytest.raises(queue.Empty):
                copy.get(block=False)  # the batch belongs to the original
    with Dequeuer(folder) as dequeuer:
        assert dequeuer.get(timeout=5) == 2


def test_many_consumer_threads_share_one_dequeuer_without_loss(folder):
    put_batches(folder, *[list(range(i * 100, (i + 1) * 100)) for i in range(20)])
    got = []
    lock = threading.Lock()
    with Dequeuer(folder) as dequeuer:
        def work():
            while True:
                try:
                    items = dequeuer.get_many(7, timeout=0.2)
                except queue.Empty:
                    return
                with lock:
                    got.extend(items)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(got) == list(range(2000))
