"""Fault injection, the short runs: every scenario of tools/chaos.py, plus the faults it found.

Each ``test_scenario_*`` runs the quick profile of one chaos scenario (the same code that
``python tools/chaos.py`` runs for long) and fails with the scenario's own findings: items lost,
duplicated beyond the documented bound or never put, files that fail ``PRAGMA integrity_check``,
violations the inotify witness saw (a ready_ file beside a journal, a batch with two names).
The seed is printed; ``TURBO_QUEUE_SEED=<seed>`` replays a run.

Some scenarios need strace, a tmpfs mount (root) or setpriv. Outside CI a missing one skips the
test, saying how to get it; in CI (``CI=true``) it fails, so that a fault test never silently
stops running. strace is installed from Debian's packages in CI when missing.

The other tests pin down, one by one, the faults the chaos runs found and that are now fixed.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3

import pytest

from turbo_queue import BatchWriteError, Dequeuer, Enqueuer, recover
from turbo_queue import _folder

from tests.support import drain, listing, run_python, wait_for
from tools import faults
from tools.faults.disk import Tmpfs, fill_disk
from tools.faults.files import without_dac_override
from tools.faults.folder import integrity, raw_meta, set_meta, write_batch

IN_CI = os.environ.get("CI") == "true"
DEADLINE = 60.0


def unavailable(reason: str) -> None:
    """A scenario cannot run here: fail in CI, skip elsewhere (saying how to fix it)."""
    if IN_CI:
        pytest.fail(f"this fault test cannot run in CI: {reason}")
    pytest.skip(reason)


@pytest.mark.parametrize("name", list(faults.SCENARIOS))
def test_scenario(name, tmp_path, seed):
    result = faults.run_scenario(name, profile="quick", seed=seed, root=str(tmp_path))
    if result.unavailable:
        unavailable(result.unavailable)
    print(faults.table([result]))
    for note in result.notes:
        print("-", note)
    assert result.runs > 0, "the scenario ran nothing"
    assert result.ok, (
        f"{result.scenario} (seed {seed}): lost {result.lost}, integrity failures {result.integrity_failures}, "
        f"{result.failure_count} failed checks:\n" + "\n".join(result.failures)
    )


# -- helpers ----------------------------------------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path):
    """A 1 MB tmpfs (needs root), unmounted afterwards."""
    try:
        mount = Tmpfs(str(tmp_path), 1_000_000)
    except faults.Unavailable as exc:
        unavailable(str(exc))
    with mount:
        yield mount.path


# -- disk full --------------------------------------------------------------------------------------


def test_a_roll_by_the_timer_that_fails_raises_at_the_next_call_and_the_queue_recovers(tmpfs):
    folder = os.path.join(tmpfs, "q")
    producer = Enqueuer(folder, max_batch_delay=0.01, chunk_size=1000)
    try:
        filler = fill_disk(tmpfs)
        producer.put({"id": 0, "pad": "p" * 2000})  # the timer rolls it, and the commit finds no space
        wait_for(lambda: producer.pending == 0, "the timer's roll")
        with pytest.raises(BatchWriteError) as raised:
            producer.put({"id": 1})
        assert isinstance(raised.value, OSError) and raised.value.items == 1
        assert "its 1 items were not handed over" in str(raised.value) and folder in str(raised.value)
        assert listing(folder)["ready"] == [] or all(
            integrity(os.path.join(folder, n)) == ["ok"] for n in listing(folder)["ready"])
        leftovers = {k: v for k, v in listing(folder).items() if k in ("loading", "creating", "journal") and v}
        assert not leftovers, f"a failed batch left {leftovers} behind"
        os.unlink(filler)
        producer.put({"id": "after"})
        producer.flush()
        assert {"id": "after"} in drain(folder)
    finally:
        producer.close()


def test_a_consumer_on_a_full_disk_hands_back_and_goes_on(tmpfs, caplog):
    folder = os.path.join(tmpfs, "q")
    with Enqueuer(folder, chunk_size=10) as producer:
        producer.put_many([{"id": i} for i in range(300)])
    filler = fill_disk(tmpfs)
    consumer = Dequeuer(folder, ack_every=5, recover_every=3600)
    got = [consumer.get(timeout=10)["id"] for _ in range(50)]  # positions cannot be recorded: no space
    consumer.close()  # the hand-back must not raise, and must not keep the batch
    (name,) = listing(folder)["ready"]
    assert "cannot record the acknowledged position" in caplog.text
    assert listing(folder)["chosen"] == []
    got += [item["id"] for item in drain(folder)]  # still on the full disk
    assert set(got) == set(range(300)), "nothing may be lost"
    assert len(got) <= 300 + 50, "only what the first consumer got may come twice"
    os.unlink(filler)


# -- fork ---------------------------------------------------------------------------------------------


def test_a_forked_child_that_exits_does_not_roll_back_the_parents_batch(folder):
    """The child inherits the parent's open SQLite transaction; freeing it at the child's exit
    rolled the parent's transaction back in the parent's file and deleted its journal, so the
    parent's next commit failed ("disk I/O error") and its batch was lost."""
    run_python(
        """
        import os, sys
        from turbo_queue import Enqueuer
        producer = Enqueuer(sys.argv[1], max_batch_delay=3600)
        producer.put_many([{"id": i} for i in range(250)])  # written into the file, not committed
        pid = os.fork()
        if pid == 0:
            sys.exit(0)  # a normal exit: the interpreter frees everything it holds
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        producer.close()
        """,
        folder,
    )
    assert sorted(item["id"] for item in drain(folder)) == list(range(250))


# -- damaged files ----------------------------------------------------------------------------------


def test_a_damaged_count_never_deletes_unread_items(folder):
    name = write_batch(folder, list(range(300)), _folder.READY)
    set_meta(os.path.join(folder, name), "count", 120)  # the file says 120, its chunks hold 300
    assert drain(folder) == []
    assert listing(folder)["bad"] == [name.replace("ready_", "bad_")]


@pytest.mark.parametrize("damage", ["UPDATE meta SET key = 'fosmat' WHERE key = 'format'",
                                    "UPDATE meta SET value = 0 WHERE key = 'format'",
                                    "UPDATE meta SET value = 'f' WHERE key = 'format'"])
def test_a_damaged_format_is_quarantined_not_left_for_a_newer_reader(folder, damage):
    """Only a higher version is left as it is for a newer reader; a bit flip in the format's key or
    value made a file that no release can read, and it was left ``ready_`` for ever."""
    name = write_batch(folder, list(range(300)), _folder.READY)
    conn = sqlite3.connect(os.path.join(folder, name), isolation_level=None)
    conn.execute(damage)
    conn.close()
    assert drain(folder) == []
    assert os.listdir(folder) == [name.replace("ready_", "bad_")]


def test_a_malformed_chunk_row_is_quarantined_not_raised(folder):
    name = write_batch(folder, list(range(300)), _folder.READY)
    conn = sqlite3.connect(os.path.join(folder, name), isolation_level=None)
    conn.execute("UPDATE items SET n = 'x' WHERE first = 100")  # what a damaged page can read back as
    conn.close()
    got = drain(folder)
    assert [item["id"] for item in got] == list(range(100))
    assert listing(folder)["bad"] == [name.replace("ready_", "bad_")]


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout, for tools in a child

DRAIN_IN_A_CHILD = """
    import sys
    sys.path.insert(0, sys.argv[2])
    from tools.faults.folder import drain
    print(sorted(item["id"] for item in drain(sys.argv[1])))
"""


def test_a_damaged_chunk_whose_count_changed_too_is_set_aside_once_and_its_batch_quarantined(folder):
    """A damaged chunk whose n changed too: going past it found the same chunk again, and the
    consumer set it aside again and again, a bad_ file each time, for ever (run in a child with
    a deadline)."""
    name = write_batch(folder, list(range(300)), _folder.READY)
    conn = sqlite3.connect(os.path.join(folder, name), isolation_level=None)
    conn.execute("UPDATE items SET n = 36, crc = crc + 1 WHERE first = 100")  # a flipped bit in each
    conn.close()
    result = run_python(DRAIN_IN_A_CHILD, folder, ROOT, timeout=60)
    assert result.stdout.strip() == str(list(range(100)))
    bad = listing(folder)["bad"]
    assert len(bad) == 2 and name.replace("ready_", "bad_") in bad, bad  # the chunk, then the rest
    assert "does not hold item 136" in result.stderr


def test_a_kept_traceback_of_a_damaged_chunk_does_not_crash_the_process(folder):
    """A log handler may keep an exception, and with it the frames of its traceback: the reader's
    frame held the open statement of the damaged file's in-memory copy, which crashed the process
    (SIGSEGV in SQLite) when it was freed after that copy's connection had read another file."""
    damaged = write_batch(folder, list(range(300)), _folder.READY)
    conn = sqlite3.connect(os.path.join(folder, damaged), isolation_level=None)
    conn.execute("UPDATE items SET crc = crc + 1 WHERE first = 100")
    conn.close()
    write_batch(folder, list(range(300, 600)), _folder.READY)
    run_python(KEEP_THE_TRACEBACK, folder, timeout=60)


KEEP_THE_TRACEBACK = """
    import os, sys
    from turbo_queue import _batchfile, _folder

    folder = sys.argv[1]
    kept = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        fd = os.open(path, os.O_RDONLY)
        reader = _batchfile.BatchReader(path, fd=fd)
        position = 0
        while True:
            try:
                chunk = reader.chunk_at(position)
            except _batchfile.DamagedChunk as exc:
                kept.append(exc)
                break
            if chunk is None:
                break
            position = chunk.first + chunk.n
        reader.close()
        os.close(fd)
    assert len(kept) == 1
    del kept[:]
    print("freed")
"""


def test_a_journal_that_sqlite_ignores_does_not_keep_a_batch_from_recovery(folder):
    """A durable consumer killed as it began to record its position: with synchronous on, SQLite
    writes the journal's header with zeros first and its magic number only when it syncs the
    journal, before it changes the database. SQLite ignores such a journal and never removes it;
    recovery refused the batch for ever because of it."""
    name = write_batch(folder, list(range(500)), _folder.CHOSEN, acked=100)
    with open(os.path.join(folder, name + "-journal"), "wb") as f:
        f.write(bytes(28) + os.urandom(4096))  # a header not yet synced, then page images
    report = recover(folder)
    assert report.requeued == [name], report
    assert os.listdir(folder) == [name.replace("chosen_", "ready_")]
    assert [item["id"] for item in drain(folder)] == list(range(100, 500))


# -- poison items -----------------------------------------------------------------------------------


POISON_PRODUCER = """
    import sys
    from turbo_queue import Enqueuer

    class OnlyHere:  # no consumer has this class
        def __init__(self, i):
            self.i = i

        def __eq__(self, other):
            return isinstance(other, OnlyHere) and other.i == self.i

    folder = sys.argv[1]
    with Enqueuer(folder, chunk_size=10, max_batch_delay=3600) as producer:
        for i in range(100):
            producer.put(OnlyHere(i) if i == 42 else {"id": i})
    if len(sys.argv) > 2:  # read back the set-aside items, as a consumer that has the class would
        from turbo_queue import Dequeuer
        import queue
        with Dequeuer(sys.argv[2]) as consumer:
            got = []
            try:
                while True:
                    got.append(consumer.get(timeout=0.5))
            except queue.Empty:
                pass
        assert got == [{"id": i} for i in range(40, 42)] + [OnlyHere(42)] + [{"id": i} for i in range(43, 50)], got
"""


def test_an_undecodable_chunk_is_set_aside_and_the_rest_of_its_batch_delivered(folder, tmp_path, caplog):
    run_python(POISON_PRODUCER, folder)
    (batch,) = listing(folder)["ready"]
    with caplog.at_level(logging.ERROR, logger="turbo_queue"):
        got = [item["id"] for item in drain(folder)]
    assert got == list(range(40)) + list(range(50, 100)), "only the chunk with the poison item is kept back"
    (bad,) = listing(folder)["bad"]
    meta = raw_meta(os.path.join(folder, bad))
    assert (meta["count"], meta["acked"], meta["set_aside_first"]) == (10, 0, 40)
    assert _folder.parse_name(meta["set_aside_from"]).uid == _folder.parse_name(batch).uid
    assert "Can't get attribute 'OnlyHere'" in meta["reason"] and bad in caplog.text
    assert recover(folder).changed == 0 and drain(folder) == [], "never delivered again"
    # A person who fixed the consumer renames the bad_ file to ready_: its items are delivered.
    retry = tmp_path / "retry"
    retry.mkdir()
    os.rename(os.path.join(folder, bad), str(retry / bad.replace("bad_", "ready_")))
    run_python(POISON_PRODUCER, str(tmp_path / "unused"), str(retry))


# -- permissions --------------------------------------------------------------------------------------


def test_a_folder_this_user_cannot_write_is_refused_at_construction(tmp_path):
    try:
        prefix = without_dac_override()
    except faults.Unavailable as exc:
        unavailable(str(exc))
    folder = tmp_path / "read-only"
    folder.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(folder, 0o555)
    result = run_python(
        """
        import sys
        from turbo_queue import Enqueuer
        Enqueuer(sys.argv[1])
        """,
        str(folder), prefix=prefix, check=False,
    )
    assert result.returncode == 1
    assert "PermissionError: [Errno 13] an Enqueuer cannot create or rename files in the queue folder" in result.stderr
    assert "umask 002" in result.stderr and str(folder) in result.stderr


def test_files_and_folders_follow_the_umask(tmp_path):
    for umask in (0o002, 0o022, 0o077):
        folder = tmp_path / f"umask{umask:03o}"
        old = os.umask(umask)
        try:
            with Enqueuer(folder) as producer:
                producer.put(1)
        finally:
            os.umask(old)
        (name,) = listing(str(folder))["ready"]
        assert oct(os.stat(folder).st_mode & 0o777) == oct(0o775 & ~umask)
        assert oct(os.stat(folder / name).st_mode & 0o777) == oct(0o664 & ~umask)


# -- foreign entries --------------------------------------------------------------------------------


def test_a_batch_file_of_another_user_that_cannot_be_read_is_left_alone(tmp_path):
    try:
        prefix = without_dac_override()
    except faults.Unavailable as exc:
        unavailable(str(exc))
    folder = tmp_path / "q"
    folder.mkdir()
    os.chmod(tmp_path, 0o755)
    names = [write_batch(str(folder), [-1], state) for state in ("ready", "loading", "chosen")]
    for name in names:
        os.chmod(folder / name, 0)
    write_batch(str(folder), [1, 2, 3], "ready")
    result = run_python(
        """
        import json, sys
        from turbo_queue import Dequeuer, recover
        reports = [recover(sys.argv[1], dry_run=True).as_dict(), recover(sys.argv[1]).as_dict()]
        with Dequeuer(sys.argv[1]) as consumer:
            got = consumer.get_many(10, timeout=5)
        print(json.dumps({"reports": reports, "got": got}))
        """,
        str(folder), prefix=prefix,
    )
    out = json.loads(result.stdout)
    assert [item["id"] for item in out["got"]] == [1, 2, 3]
    for report in out["reports"]:
        assert sorted(report["refused"]) == sorted(n for n in names if not n.startswith("ready_")), report
    assert sorted(n for n in os.listdir(folder)) == sorted(names)
    assert "cannot open it (Permission denied)" in result.stderr
