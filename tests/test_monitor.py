"""The monitor's reading of a queue folder, in-process: real folders, real producer and consumer
processes, real /proc/locks, real SQLite files. The commands themselves are run as programs in
test_monitor_cli.py."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import textwrap
import time
import uuid
from typing import Callable

import pytest

from turbo_queue import Dequeuer, monitor
from turbo_queue import _batchfile
from turbo_queue._batchfile import BatchReader

from tests.support import drain, listing, hand_over, snapshot
from tests.support.programs import CONSUMER, PRODUCER

DEADLINE = 60.0

# -- the figures of a folder, against what the test did ----------------------------------------------


def test_snapshot_counts_files_backlog_live_and_orphaned(folder, children):
    # A consumer that dies holding a 5-item batch (killed only once the live consumer below has
    # claimed its batch: a consumer's first claim runs recovery, which would take the orphan back).
    hand_over(folder, 5)
    dead_consumer = children(CONSUMER.replace("range(21)", "range(1)"), folder, ready="holding")
    (orphan_chosen,) = listing(folder)["chosen"]
    # A live consumer holding a 40-item batch, 20 of them acknowledged in the file.
    hand_over(folder, 40)
    consumer = children(CONSUMER, folder, ready="holding")
    live_chosen = [name for name in listing(folder)["chosen"] if name != orphan_chosen]
    dead_consumer.kill()
    # Two ready batches, a live producer and a dead one, a bad_ file and a foreign file.
    waiting = hand_over(folder, 20, 30)
    producer = children(PRODUCER, folder, ready="holding")
    (live_loading,) = listing(folder)["loading"]
    dead_producer = children(PRODUCER, folder, ready="holding")
    (dead_loading,) = [name for name in listing(folder)["loading"] if name != live_loading]
    dead_producer.kill()
    bad = f"bad_{int(time.time())}_{uuid.uuid4()}.db"
    with open(os.path.join(folder, bad), "w") as f:
        f.write("kept for a person to look at")
    with open(os.path.join(folder, "notes.txt"), "w") as f:
        f.write("not the protocol's")
    before = snapshot(folder)

    figures = monitor.snapshot(folder, names=True)

    assert figures.exists and figures.error is None
    assert figures.files == {"loading": 2, "ready": 2, "chosen": 2, "bad": 1}
    assert figures.backlog_items == 5 + (40 - 20) + 20 + 30
    assert figures.uncounted_batches == 0 and figures.problems == []
    assert figures.live == {live_loading: producer.pid, live_chosen[0]: consumer.pid}
    assert figures.orphaned == sorted([orphan_chosen, dead_loading])
    assert figures.oldest_ready_epoch == min(int(name.split("_")[1]) for name in waiting)
    assert figures.oldest_ready_age == pytest.approx(figures.time - figures.oldest_ready_epoch)
    assert figures.names == sorted(name for name in os.listdir(folder))
    assert figures.handed_over is None and figures.consumed is None  # one look measures no rate
    assert snapshot(folder) == before  # read only: nothing renamed, written or touched

    # The processes go on undisturbed, and with recovery every item arrives.
    assert producer.finish() == 0 and consumer.finish() == 0
    from turbo_queue import recover
    recover(folder)
    items = drain(folder)
    # The orphan comes back whole (its consumer acknowledged nothing); the live consumer had
    # acknowledged 21 of its 40 when it closed.
    expected = list(range(5)) + list(range(21, 40)) + list(range(20)) + list(range(20, 50)) + list(range(150))
    assert sorted(items) == sorted(expected)


def test_snapshot_of_a_missing_folder_a_file_and_an_empty_folder(tmp_path, folder):
    gone = monitor.snapshot(str(tmp_path / "nope"))
    assert not gone.exists and gone.error == "no such folder"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert monitor.snapshot(str(a_file)).error == "not a folder"
    empty = monitor.snapshot(folder)
    assert empty.exists and empty.files == {"loading": 0, "ready": 0, "chosen": 0, "bad": 0}
    assert empty.backlog_items == 0 and empty.oldest_ready_epoch is None and empty.oldest_ready_age is None
    assert empty.live == {} and empty.orphaned == []


def test_a_file_named_like_a_batch_that_is_not_one_is_reported_not_counted(folder):
    (real,) = hand_over(folder, 7)
    fake = f"ready_{int(time.time())}_{uuid.uuid4()}.db"
    with open(os.path.join(folder, fake), "w") as f:
        f.write("this is not SQLite")
    figures = monitor.snapshot(folder)
    assert figures.files["ready"] == 2
    assert figures.backlog_items == 7 and figures.uncounted_batches == 1
    assert len(figures.problems) == 1 and figures.problems[0].startswith(f"{fake}: not a turbo_queue batch file")


def test_reading_takes_no_lock_so_a_consumer_can_always_write_its_position(folder):
    """A plain read-only SQLite connection holds a shared lock while it reads: a consumer that
    records its position then waits for it (up to its busy timeout, 5 s) and then fails with
    "database is locked". The monitor's connection takes no lock: the consumer's own write goes
    through at once while the monitor is mid-read (were a lock held, this single thread would
    wait 5 s and fail)."""
    (name,) = hand_over(folder, 50)
    path = os.path.join(folder, name)
    consumer = BatchReader(path)  # what a Dequeuer holds
    try:
        reader = _batchfile.connect_read_only(path)
        cursor = reader.execute("SELECT first, n, data FROM items")
        cursor.fetchone()  # a read in progress
        consumer.save_acked(7)
        cursor.close()
        reader.close()
        plain = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        cursor = plain.execute("SELECT first, n, data FROM items")
        cursor.fetchone()
        impatient = sqlite3.connect(path, isolation_level=None, timeout=0)
        with pytest.raises(sqlite3.OperationalError, match="locked"):  # what the monitor avoids
            impatient.execute("UPDATE meta SET value = 8 WHERE key = 'acked'")
        impatient.close()
        cursor.close()
        plain.close()
    finally:
        consumer.close()
    assert monitor.read_meta(path)["acked"] == 7


def test_read_items_starts_at_the_acknowledged_position_and_decodes_with_the_files_codec(folder):
    (name,) = hand_over(folder, 25, codec="json", start=100)
    path = os.path.join(folder, name)
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("UPDATE meta SET value = 12 WHERE key = 'acked'")
    meta, items = monitor.read_items(path, 5)
    assert meta["codec"] == "json" and meta["count"] == 25 and meta["acked"] == 12
    assert items == [112, 113, 114, 115, 116]
    assert monitor.read_items(path, 1000)[1] == list(range(112, 125))


def test_liveness_follows_the_kernel_lock_table(folder, children):
    producer = children(PRODUCER, folder, ready="holding")
    (name,) = listing(folder)["loading"]
    found = monitor.holders(folder, [name])
    assert found is not None and found.live == {name: producer.pid} and found.orphaned == []
    producer.kill()
    found = monitor.holders(folder, [name])
    assert found is not None and found.live == {} and found.orphaned == [name]
    assert monitor.holders(folder, ["loading_0_gone.db"]).gone == ["loading_0_gone.db"]


def test_parse_locks():
    text = textwrap.dedent("""\
        1: FLOCK  ADVISORY  WRITE 4242 fe:00:9977884 0 EOF
        1: -> FLOCK  ADVISORY  WRITE 4343 fe:00:9977884 0 EOF
        2: POSIX  ADVISORY  READ 17 00:1b:50415 1073741826 1073742335
        3: FLOCK  ADVISORY  WRITE 99 103:0a:12 0 EOF
        4: OFDLCK ADVISORY  READ -1 00:06:9 0 EOF
    """)
    assert monitor.parse_locks(text) == {(0xFE, 0, 9977884): 4242, (0x103, 0x0A, 12): 99}


# -- flows from events -------------------------------------------------------------------------------


def _watch_until(session: monitor.Session, predicate: Callable[[monitor.QueueFigures], bool], what: str):
    deadline = time.monotonic() + DEADLINE
    while True:
        session.process()
        (figures,) = session.figures()
        if predicate(figures):
            return figures
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {figures}")
        session.wait(0.05)


def test_a_session_counts_what_is_handed_over_and_consumed(folder):
    hand_over(folder, 4)  # there before watching: not counted as handed over
    with monitor.Session([folder]) as session:
        first = session.figures()[0]
        assert first.handed_over_total.batches == 0 and first.backlog_items == 4
        hand_over(folder, 10, 20, 30)
        figures = _watch_until(session, lambda f: f.handed_over_total.batches == 3, "3 batches handed over")
        assert figures.handed_over_total.items == 60 and figures.handed_over_total.uncounted == 0
        assert figures.backlog_items == 64 and figures.files["ready"] == 4
        assert sum(figures.handed_over_history) == 60
        assert sorted(drain(folder)) == sorted(list(range(4)) + list(range(60)))
        figures = _watch_until(session, lambda f: f.consumed_total.batches == 4, "4 batches consumed")
        # The batch that was there before watching counts as consumed (its 4 items too: none had
        # been acknowledged when watching began).
        assert figures.consumed_total.items == 64 and figures.consumed_total.uncounted == 0
        assert figures.backlog_items == 0 and figures.files["ready"] == 0
        assert figures.handed_over.batches == 3 and figures.consumed.batches == 4  # within the rate window


def test_a_session_credits_a_consumers_progress_and_a_hand_back(folder):
    hand_over(folder, 100)
    with monitor.Session([folder]) as session:
        session.figures()
        dequeuer = Dequeuer(folder, ack_every=10)
        got = [dequeuer.get(timeout=10) for _ in range(31)]  # position 30 recorded in the file
        figures = _watch_until(session, lambda f: f.consumed_total.items == 30, "30 items acknowledged")
        assert figures.backlog_items == 70 and figures.files["chosen"] == 1
        dequeuer.close()  # hands the batch back: 31 acknowledged
        figures = _watch_until(session, lambda f: f.files["ready"] == 1 and f.consumed_total.items == 31,
                               "the hand-back")
        assert figures.backlog_items == 69 and figures.consumed_total.batches == 0
        got += drain(folder)
        figures = _watch_until(session, lambda f: f.consumed_total.batches == 1, "the batch finished")
        assert figures.consumed_total.items == 100 and figures.backlog_items == 0
    assert got == list(range(100))


def test_a_session_waits_for_a_folder_and_follows_it_when_it_is_removed_and_made_again(tmp_path):
    folder = str(tmp_path / "later" / "queue")
    with monitor.Session([folder]) as session:
        assert not session.figures()[0].exists
        os.makedirs(folder)
        _watch_until(session, lambda f: f.exists, "the folder to appear")
        hand_over(folder, 3)
        _watch_until(session, lambda f: f.handed_over_total.batches == 1 and f.backlog_items == 3, "a batch")
        shutil.rmtree(tmp_path / "later")
        _watch_until(session, lambda f: not f.exists, "the folder to go")
        os.makedirs(folder)
        _watch_until(session, lambda f: f.exists, "the folder to come back")  # then it is watched again
        hand_over(folder, 2)
        figures = _watch_until(session, lambda f: f.handed_over_total.batches == 2, "a batch in the new folder")
        assert figures.backlog_items == 2 and figures.handed_over_total.items == 5


def test_a_folder_removed_and_made_again_before_the_session_looks_is_watched_again(tmp_path):
    # ext4 gives the new folder the inode the old one had: only the event that the old one went
    # tells that its watch is dead.
    folder = str(tmp_path / "queue")
    os.makedirs(folder)
    with monitor.Session([folder]) as session:
        hand_over(folder, 3)
        _watch_until(session, lambda f: f.handed_over_total.batches == 1, "a batch")
        shutil.rmtree(folder)
        os.makedirs(folder)
        time.sleep(0.2)
        session.process()  # the events of the removal are taken in only now
        hand_over(folder, 2)
        figures = _watch_until(session, lambda f: f.handed_over_total.batches == 2, "a batch in the new folder")
        assert figures.exists and figures.backlog_items == 2 and figures.handed_over_total.items == 5


# -- rendering -------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [20, 60, 80, 133, 250])
def test_ls_columns_is_what_ls_prints(tmp_path, width):
    names = [f"ready_{1700000000 + i}_{uuid.uuid4()}.db" for i in range(40)]
    names += [f"chosen_{1700000000 + i}_{uuid.uuid4()}.db" for i in range(3)] + ["a", "notes.txt", "zz" * 40]
    for name in names:
        (tmp_path / name).touch()
    env = dict(os.environ, LC_ALL="C")
    expected = subprocess.run(["ls", "-C", "-T", "0", "-w", str(width)], cwd=tmp_path, capture_output=True,
                              text=True, env=env, check=True).stdout.splitlines()
    assert monitor.ls_columns(sorted(names), width) == expected


def test_sparkline():
    assert monitor.sparkline([0, 0, 0]) == "▁▁▁"
    assert monitor.sparkline([0, 1, 4, 8]) == "▁▂▅█"
    assert monitor.sparkline([1, 1000]) == "▂█"  # small but not zero stays above the baseline
    assert monitor.sparkline([]) == ""
    assert monitor.sparkline([0, 5, 10], "_.-:=+*#") == "_=#"


def test_prometheus_text_parses_and_escapes_labels(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    folder = tmp_path / 'a "queue" with \\ and\nnewline'
    folder.mkdir()
    hand_over(str(folder), 3, 4)
    figures = [monitor.snapshot(str(folder)), monitor.snapshot(str(tmp_path / "missing"))]
    families = {family.name: family for family in text_string_to_metric_families(monitor.prometheus_text(figures))}
    assert families["turbo_queue_backlog_items"].samples[0].labels == {"queue": str(folder)}
    assert families["turbo_queue_backlog_items"].samples[0].value == 7
    exists = {s.labels["queue"]: s.value for s in families["turbo_queue_folder_exists"].samples}
    assert exists == {str(folder): 1, str(tmp_path / "missing"): 0}
    assert "turbo_queue_batches_handed_over" not in families  # a one-off look counted nothing
