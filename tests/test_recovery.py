"""recover(): what it does to each kind of file it may find, with real files, SQLite and processes.

Orphans are made the way a dying process leaves them: a batch written with the package's own
``BatchWriter`` whose lock is dropped without the hand-over rename, a consumer's ``chosen_`` file
whose lock is dropped, and real child processes killed with SIGKILL in the middle of their work.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import uuid
from typing import List

import pytest

from turbo_queue import Enqueuer, RecoveryReport, recover
from turbo_queue import _folder, _batchfile
from turbo_queue._codecs import get_codec

from tests.support import digest, drain, listing, read_batch, run_python, snapshot
from tools.faults.folder import JOURNAL_SUFFIXES, batch_name, integrity, set_meta, write_items

PICKLE = get_codec("pickle")
CHILD_TIMEOUT = 60.0


# -- helpers ------------------------------------------------------------------------------------


def make_items(tag: str, count: int, start: int = 0) -> List[dict]:
    return [{"tag": tag, "i": i, "pad": "x" * 40} for i in range(start, start + count)]


def renamed(filename: str, state: str) -> str:
    parsed = _folder.parse_name(filename)
    assert parsed is not None, filename
    return parsed.as_state(state).filename


def journals(folder: str) -> List[str]:
    return [n for n in os.listdir(folder) if n.endswith(JOURNAL_SUFFIXES)]


def assert_report(report: RecoveryReport, **expected: List[str]) -> None:
    for key in ("requeued", "removed", "quarantined", "live", "refused"):
        assert sorted(getattr(report, key)) == sorted(expected.get(key, [])), (key, report)


HOLD_FLOCK = """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("locked", flush=True)
    sys.stdin.read()
"""


# -- orphans with data are re-queued ----------------------------------------------------------------


@pytest.mark.parametrize("durable", [False, True])
def test_orphaned_loading_file_with_committed_items_is_requeued_and_delivered(folder, durable):
    items = make_items("orphan", 250)
    batch = _folder.create(folder)
    writer = _batchfile.BatchWriter(batch.path, PICKLE)
    for start in range(0, 250, 100):
        part = items[start : start + 100]
        writer.append(len(part), PICKLE.encode_many(part))
    writer.finish()
    name = batch.name.filename
    batch.unlock()  # the producer "dies" after its commit, before the rename to ready_
    assert listing(folder)["loading"] == [name]

    report = recover(folder, durable=durable)

    assert_report(report, requeued=[name])
    assert report.changed == 1 and not report.dry_run
    assert report.folder == os.path.abspath(folder)
    assert os.listdir(folder) == [renamed(name, "ready")], "same epoch and uuid, now ready_"
    assert drain(folder) == items
    assert os.listdir(folder) == []


def test_requeued_orphan_keeps_its_place_in_line(folder):
    newer = write_items(folder, make_items("newer", 30), state="ready")
    epoch = _folder.parse_name(newer).epoch - 100
    orphan = write_items(folder, make_items("older", 30), state="loading", epoch=epoch)

    report = recover(folder)

    assert_report(report, requeued=[orphan])
    assert _folder.ready_in_order(folder) == [renamed(orphan, "ready"), newer]
    assert drain(folder) == make_items("older", 30) + make_items("newer", 30)


def test_orphaned_chosen_file_keeps_its_acknowledged_position(folder):
    items = make_items("c", 1000)
    ready = write_items(folder, items, state="ready")
    # A consumer claims it, acknowledges 350 items (inside the fourth chunk) and dies.
    batch = _folder.take(folder, ready, _folder.READY, _folder.CHOSEN)
    assert batch is not None
    reader = _batchfile.BatchReader(batch.path)
    reader.save_acked(350)
    reader.close()
    chosen = batch.name.filename
    batch.unlock()

    report = recover(folder)

    assert_report(report, requeued=[chosen])
    assert os.listdir(folder) == [ready]
    assert drain(folder) == items[350:], "items before the acknowledged position must not come again"


def test_consumer_killed_mid_batch_keeps_its_position(folder, children):
    items = make_items("k", 3000)
    write_items(folder, items, state="ready")
    consumer = children(
        """
        import sys
        from turbo_queue import Dequeuer
        q = Dequeuer(sys.argv[1], ack_every=500, recover_every=3600)
        got = [q.get(timeout=30)["i"] for _ in range(1200)]
        assert got == list(range(1200)), got[:5]
        print("got", flush=True)
        sys.stdin.read()
        """,
        folder,
    )
    consumer.expect("got")
    consumer.kill()
    (chosen,) = listing(folder)["chosen"]

    report = recover(folder)

    assert_report(report, requeued=[chosen])
    meta, _ = read_batch(os.path.join(folder, renamed(chosen, "ready")), 1)
    acked = int(meta["acked"])
    assert 0 < acked <= 1199, f"acknowledged position {acked}: the 1200th item was never acknowledged"
    assert drain(folder) == items[acked:]


# -- empty orphans are removed ----------------------------------------------------------------------


def test_zero_length_loading_file_is_removed(folder):
    name = batch_name("loading")
    os.close(os.open(os.path.join(folder, name), os.O_CREAT | os.O_WRONLY, 0o644))

    report = recover(folder)

    assert_report(report, removed=[name])
    assert os.listdir(folder) == []


def test_producer_killed_as_sqlite_created_its_journal_is_cleaned_up(folder):
    """SIGKILL between SQLite creating ``-journal`` and writing its header (the producer kills of
    tools/faults meet it).

    The batch file and the journal are both empty. SQLite does not treat a zero-length journal
    as hot (it reports it as absent and never deletes it), so nothing else will remove it.
    """
    name = batch_name("loading")
    for suffix in ("", "-journal"):
        os.close(os.open(os.path.join(folder, name + suffix), os.O_CREAT | os.O_WRONLY, 0o644))

    report = recover(folder)

    assert_report(report, removed=[name])
    assert os.listdir(folder) == [], "an orphan that holds nothing must not stay forever"


def test_consumer_killed_as_sqlite_created_its_journal_is_requeued(folder):
    """SIGKILL as a consumer began saving its position: the batch at rest, an empty ``-journal``.

    The file holds unacknowledged items; if recovery refuses it, no consumer ever gets them.
    """
    items = make_items("j", 1000)
    chosen = write_items(folder, items, state="chosen", acked=300)
    os.close(os.open(os.path.join(folder, chosen + "-journal"), os.O_CREAT | os.O_WRONLY, 0o644))

    report = recover(folder)

    assert_report(report, requeued=[chosen])
    assert sorted(os.listdir(folder)) == [renamed(chosen, "ready")]
    assert drain(folder) == items[300:]


def test_fully_acknowledged_chosen_orphan_is_removed(folder):
    chosen = write_items(folder, make_items("done", 120), state="chosen", acked=120)

    report = recover(folder)

    assert_report(report, removed=[chosen])
    assert os.listdir(folder) == []


def test_producer_killed_before_its_first_commit_leaves_nothing(folder, children):
    """Uncommitted rows (pages spilled into the file, a journal beside it): removed, journal too."""
    producer = children(
        """
        import os, sys
        from turbo_queue import Enqueuer
        q = Enqueuer(sys.argv[1], batch_size=10**6, chunk_size=100, max_batch_delay=3600)
        q.put_many([os.urandom(300) for _ in range(20_000)])
        print("written", flush=True)
        sys.stdin.read()
        """,
        folder,
    )
    producer.expect("written")
    (name,) = listing(folder)["loading"]
    path = os.path.join(folder, name)
    assert os.path.exists(path + "-journal"), "the transaction should still be open"
    assert os.path.getsize(path) > 0, "6 MB of rows should have spilled into the file"
    producer.kill()

    report = recover(folder)

    assert_report(report, removed=[name])
    assert os.listdir(folder) == [], "no batch and no journal may remain"
    assert drain(folder) == []


def test_producer_killed_in_a_transaction_after_a_commit_keeps_exactly_what_was_committed(folder, children):
    """A hot journal beside a file that holds committed items plus spilled uncommitted pages.

    Recovery must open the file under its own name (so SQLite rolls the journal back) before it
    renames it: the re-queued batch then holds exactly the committed items.
    """
    producer = children(
        """
        import os, sqlite3, sys
        from turbo_queue import _folder, _batchfile
        from turbo_queue._codecs import get_codec
        codec = get_codec("pickle")
        batch = _folder.create(sys.argv[1])
        writer = _batchfile.BatchWriter(batch.path, codec)
        for c in range(10):
            writer.append(100, codec.encode_many([{"tag": "committed", "i": i} for i in range(c * 100, c * 100 + 100)]))
        writer.finish()
        conn = sqlite3.connect(batch.path, isolation_level=None)
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA cache_size=5")  # spill uncommitted pages into the file early
        conn.execute("BEGIN")
        for c in range(10, 300):
            conn.execute("INSERT INTO items (first, n, crc, data) VALUES (?, ?, 0, ?)",
                         (c * 100, 100, codec.encode_many([os.urandom(20) for _ in range(100)])))
        conn.execute("DELETE FROM items WHERE first < 500")
        conn.execute("UPDATE meta SET value = 30000 WHERE key = 'count'")
        print("size", os.path.getsize(batch.path), flush=True)
        sys.stdin.read()
        """,
        folder,
    )
    size = int(producer.expect("size"))
    (name,) = listing(folder)["loading"]
    path = os.path.join(folder, name)
    assert os.path.exists(path + "-journal")
    assert size > 100_000, "uncommitted pages should be in the file itself"
    producer.kill()

    report = recover(folder)

    assert_report(report, requeued=[name])
    assert journals(folder) == []
    ready = os.path.join(folder, renamed(name, "ready"))
    assert integrity(ready) == ["ok"]
    assert drain(folder) == [{"tag": "committed", "i": i} for i in range(1000)]


# -- corrupt files become bad_ ------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["loading", "chosen"])
def test_random_bytes_become_bad(folder, state):
    name = batch_name(state)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(os.urandom(10_000))
    before = digest(os.path.join(folder, name))

    report = recover(folder)

    assert_report(report, quarantined=[name])
    bad = renamed(name, "bad")
    assert os.listdir(folder) == [bad]
    assert digest(os.path.join(folder, bad)) == before, "a quarantined file is kept as it was"


def damage_schema_text(path: str) -> None:
    """One bit flipped in the schema's text, a space made 0xA0: SQLite's error message then quotes
    bytes that are not UTF-8, and Python raises UnicodeDecodeError for it, not a DatabaseError."""
    with open(path, "r+b") as f:
        data = f.read()
        at = data.index(b"CREATE TABLE items") + len(b"CREATE TABLE")
        f.seek(at)
        f.write(b"\xa0")


@pytest.mark.parametrize("state", ["loading", "chosen"])
def test_an_orphan_whose_schema_text_is_damaged_becomes_bad(folder, state):
    name = write_items(folder, make_items("s", 50), state=state)
    damage_schema_text(os.path.join(folder, name))

    report = recover(folder)

    assert_report(report, quarantined=[name])
    assert os.listdir(folder) == [renamed(name, "bad")]


def test_a_ready_file_whose_schema_text_is_damaged_is_set_aside_by_its_consumer(folder):
    first, damaged, last = (write_items(folder, make_items(tag, 20), state="ready", epoch=epoch)
                            for tag, epoch in (("a", 1_000), ("b", 2_000), ("c", 3_000)))
    damage_schema_text(os.path.join(folder, damaged))

    got = drain(folder)

    assert got == make_items("a", 20) + make_items("c", 20)
    assert listing(folder)["bad"] == [renamed(damaged, "bad")]


@pytest.mark.parametrize("state", ["loading", "chosen"])
def test_truncated_batch_becomes_bad(folder, state):
    name = write_items(folder, make_items("t", 5000), state=state)
    path = os.path.join(folder, name)
    size = os.path.getsize(path)
    assert size > 50_000
    os.truncate(path, size // 2)

    report = recover(folder)

    assert_report(report, quarantined=[name])
    assert os.listdir(folder) == [renamed(name, "bad")]
    assert drain(folder) == []


def test_sqlite_file_that_is_not_a_batch_becomes_bad(folder):
    name = batch_name("loading")
    conn = sqlite3.connect(os.path.join(folder, name))
    conn.execute("CREATE TABLE something (x)")
    conn.execute("INSERT INTO something VALUES (1)")
    conn.commit()
    conn.close()

    report = recover(folder)

    assert_report(report, quarantined=[name])
    assert os.listdir(folder) == [renamed(name, "bad")]


def test_bad_and_ready_files_are_not_examined(folder):
    ready = write_items(folder, make_items("r", 10), state="ready")
    bad = batch_name("bad")
    with open(os.path.join(folder, bad), "wb") as f:
        f.write(os.urandom(1000))
    before = snapshot(folder)

    report = recover(folder)

    assert_report(report)
    assert snapshot(folder) == before
    assert ready in os.listdir(folder)


# -- live files are left alone --------------------------------------------------------------------


def test_files_held_by_live_processes_are_left_alone(folder, children):
    # 1. A loading_ file with committed data whose flock a live process holds.
    held_items = make_items("held", 300)
    held = write_items(folder, held_items, state="loading")
    holder = children(HOLD_FLOCK, os.path.join(folder, held))
    holder.expect("locked")
    # 2. A consumer in the middle of a batch.
    consumed_items = make_items("deq", 1000)
    write_items(folder, consumed_items, state="ready")
    consumer = children(
        """
        import json, sys
        from turbo_queue import Dequeuer
        q = Dequeuer(sys.argv[1], ack_every=100, recover_every=3600)
        got = [q.get(timeout=30)["i"] for _ in range(150)]
        print("got", json.dumps(got), flush=True)
        sys.stdin.read()
        q.close()
        """,
        folder,
    )
    assert consumer.expect("got") == str(list(range(150)))
    # 3. A producer with a partial batch written (two chunks in the file, five items pending).
    producer = children(
        """
        import sys
        from turbo_queue import Enqueuer
        q = Enqueuer(sys.argv[1], batch_size=10_000, chunk_size=10, max_batch_delay=3600)
        for i in range(25):
            q.put({"tag": "enq", "i": i, "pad": "x" * 40})
        print("ready", flush=True)
        sys.stdin.read()
        q.close()
        """,
        folder,
    )
    producer.expect("ready")
    groups = listing(folder)
    assert len(groups["loading"]) == 2 and len(groups["chosen"]) == 1 and groups["ready"] == [], groups
    live = groups["loading"] + groups["chosen"]
    before = snapshot(folder)

    dry = recover(folder, dry_run=True)
    report = recover(folder)

    assert_report(dry, live=live)
    assert_report(report, live=live)
    assert report.changed == 0
    assert snapshot(folder) == before, "files of live processes must not be touched"

    # Once their owners are gone (normally, or by dying), everything is delivered exactly once.
    assert producer.finish() == 0, producer.stderr  # flushes its partial batch
    assert consumer.finish() == 0, consumer.stderr  # hands the unread 850 items back
    assert holder.finish() == 0, holder.stderr  # its file is now an orphan
    assert_report(recover(folder), requeued=[held])
    got = drain(folder)
    expected = held_items + consumed_items[150:] + make_items("enq", 25)
    key = lambda item: (item["tag"], item["i"])  # noqa: E731
    assert sorted(got, key=key) == sorted(expected, key=key)


def test_partial_file_of_a_live_producer_in_this_process_is_left_alone(folder):
    with Enqueuer(folder, batch_size=10_000, chunk_size=10, max_batch_delay=3600) as producer:
        for i in range(25):
            producer.put(i)
        (name,) = listing(folder)["loading"]
        report = recover(folder)
        assert_report(report, live=[name])
        assert listing(folder)["loading"] == [name]
    assert drain(folder) == list(range(25))


# -- newer formats are refused ----------------------------------------------------------------------


@pytest.mark.parametrize("state", ["loading", "chosen"])
def test_newer_format_is_refused_and_left_untouched(folder, state):
    name = write_items(folder, make_items("next", 200), state=state)
    path = os.path.join(folder, name)
    set_meta(path, "format", _batchfile.FORMAT_VERSION + 1)
    before = snapshot(folder)

    report = recover(folder)

    assert_report(report, refused=[name])
    assert snapshot(folder) == before, "same name, same bytes"
    assert journals(folder) == []


def test_newer_format_with_a_different_layout_is_refused_not_quarantined(folder):
    """The version in ``meta`` decides, whatever tables a newer format has (docs/protocol.md: inside a batch file)."""
    name = write_items(folder, make_items("next", 200), state="loading")
    path = os.path.join(folder, name)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'format'", (_batchfile.FORMAT_VERSION + 1,))
    conn.execute("ALTER TABLE items RENAME TO chunks")
    conn.close()
    before = snapshot(folder)

    report = recover(folder)

    assert_report(report, refused=[name])
    assert snapshot(folder) == before, "a format this code does not know must be left as it is"


# -- the producer's hidden temporary file ------------------------------------------------------------


def test_orphaned_creating_file_is_removed(folder):
    hidden = _folder.CREATING + batch_name("loading")[len("loading_"):]
    os.close(os.open(os.path.join(folder, hidden), os.O_CREAT | os.O_WRONLY, 0o644))

    report = recover(folder)

    assert_report(report, removed=[hidden])
    assert os.listdir(folder) == []


def test_creating_file_of_a_killed_producer_is_removed_and_a_live_one_kept(folder, children):
    code = """
        import fcntl, os, sys
        fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("locked", flush=True)
        sys.stdin.read()
    """
    dead = _folder.CREATING + batch_name("loading")[len("loading_"):]
    alive = _folder.CREATING + batch_name("loading")[len("loading_"):]
    killed = children(code, os.path.join(folder, dead))
    killed.expect("locked")
    living = children(code, os.path.join(folder, alive))
    living.expect("locked")
    killed.kill()

    report = recover(folder)

    assert_report(report, removed=[dead])
    assert os.listdir(folder) == [alive]


# -- what is not the protocol's is never touched ------------------------------------------------------


def test_files_that_are_not_the_protocols_are_never_touched(folder):
    uid = str(uuid.uuid4())
    foreign = {
        "notes.txt": b"a person's notes",
        "ready_bad_name.db": os.urandom(500),
        "loading_bad_name.db": os.urandom(500),
        "chosen_123_not-a-uuid.db": os.urandom(500),
        f"loading_123_{uid.upper()}.db": os.urandom(500),
        f"loading_123_{uid}.db.bak": os.urandom(500),
        f"loading_123_{uid}.sqlite": os.urandom(500),
        f"xloading_123_{uid}.db": os.urandom(500),
        f"loading_{uid}.db": b"",
        ".creating_notes": b"",
        f".creating_123_{uid}.db.tmp": b"",
        f"chosen_123_{uid}.db-journal": os.urandom(500),
    }
    for name, data in foreign.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    orphan = write_items(folder, make_items("o", 10), state="loading")
    before = {name: state for name, state in snapshot(folder).items() if name in foreign}

    dry = recover(folder, dry_run=True)
    report = recover(folder)

    assert_report(dry, requeued=[orphan])
    assert_report(report, requeued=[orphan])
    after = {name: state for name, state in snapshot(folder).items() if name in foreign}
    assert after == before


@pytest.mark.parametrize("dry_run", [False, True], ids=["recover", "dry_run"])
@pytest.mark.parametrize("state", ["loading", "chosen", "ready", "bad"])
def test_directory_named_like_a_batch_is_never_touched(folder, state, dry_run):
    name = batch_name(state)
    os.mkdir(os.path.join(folder, name))
    with open(os.path.join(folder, name, "inside.txt"), "w") as f:
        f.write("not a batch")
    before = snapshot(folder)

    report = recover(folder, dry_run=dry_run)

    assert snapshot(folder) == before
    assert name not in report.requeued + report.removed + report.quarantined, report


@pytest.mark.parametrize("dry_run", [False, True], ids=["recover", "dry_run"])
def test_directory_named_like_a_creating_file_is_never_touched(folder, dry_run):
    name = _folder.CREATING + batch_name("loading")[len("loading_"):]
    os.mkdir(os.path.join(folder, name))
    before = snapshot(folder)

    report = recover(folder, dry_run=dry_run)

    assert snapshot(folder) == before
    assert name not in report.removed, report


@pytest.mark.parametrize("dry_run", [False, True], ids=["recover", "dry_run"])
@pytest.mark.parametrize("state", ["loading", "chosen"])
def test_symlink_named_like_a_batch_is_never_followed(folder, tmp_path, state, dry_run):
    # The link points at a real orphan batch outside the folder: following it would re-queue it.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = os.path.join(str(elsewhere), write_items(str(elsewhere), make_items("s", 10), state="loading"))
    target_digest = digest(target)
    name = batch_name(state)
    os.symlink(target, os.path.join(folder, name))
    before = snapshot(folder)

    report = recover(folder, dry_run=dry_run)

    assert snapshot(folder) == before
    assert digest(target) == target_digest and os.listdir(str(elsewhere)) == [os.path.basename(target)]
    assert name not in report.requeued + report.removed + report.quarantined, report


@pytest.mark.parametrize("dry_run", [False, True], ids=["recover", "dry_run"])
def test_fifo_named_like_a_batch_is_never_touched(folder, dry_run):
    name = batch_name("loading")
    os.mkfifo(os.path.join(folder, name))
    code = """
        import json, sys
        from turbo_queue import recover
        print(json.dumps(recover(sys.argv[1], dry_run=sys.argv[2] == "1").as_dict()))
    """
    try:
        result = run_python(code, folder, "1" if dry_run else "0", timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"recover(dry_run={dry_run}) hung on a FIFO named {name}")
    assert os.listdir(folder) == [name]
    report = json.loads(result.stdout)
    assert name not in report["requeued"] + report["removed"] + report["quarantined"], report


# -- dry_run and the report ------------------------------------------------------------------------


def test_dry_run_changes_nothing_and_the_report_lists_are_right(folder, children):
    with_data = write_items(folder, make_items("a", 50), state="loading")
    chosen = write_items(folder, make_items("b", 50), state="chosen", acked=20)
    zero = batch_name("loading")
    os.close(os.open(os.path.join(folder, zero), os.O_CREAT | os.O_WRONLY, 0o644))
    corrupt = batch_name("chosen")
    with open(os.path.join(folder, corrupt), "wb") as f:
        f.write(os.urandom(3000))
    newer = write_items(folder, make_items("n", 5), state="loading")
    set_meta(os.path.join(folder, newer), "format", _batchfile.FORMAT_VERSION + 1)
    held = write_items(folder, make_items("h", 5), state="loading")
    holder = children(HOLD_FLOCK, os.path.join(folder, held))
    holder.expect("locked")
    creating = _folder.CREATING + batch_name("loading")[len("loading_"):]
    os.close(os.open(os.path.join(folder, creating), os.O_CREAT | os.O_WRONLY, 0o644))
    ready = write_items(folder, make_items("r", 5), state="ready")
    with open(os.path.join(folder, "notes.txt"), "w") as f:
        f.write("notes")
    before = snapshot(folder)

    dry = recover(folder, dry_run=True)

    assert snapshot(folder) == before, "dry_run must change nothing"
    assert dry.dry_run is True
    # The same decision as the real run below, made on private copies of the files.
    assert_report(dry, requeued=[with_data, chosen], removed=[zero, creating], quarantined=[corrupt],
                  refused=[newer], live=[held])

    report = recover(folder)

    assert_report(
        report, requeued=[with_data, chosen], removed=[zero, creating], quarantined=[corrupt],
        refused=[newer], live=[held],
    )
    assert report.changed == 5
    assert report.as_dict() == {
        "folder": os.path.abspath(folder), "dry_run": False, "requeued": report.requeued,
        "converted": [], "removed": report.removed, "quarantined": report.quarantined, "live": report.live,
        "refused": report.refused,
    }
    assert sorted(os.listdir(folder)) == sorted(
        [renamed(with_data, "ready"), renamed(chosen, "ready"), renamed(corrupt, "bad"), newer, held, ready, "notes.txt"]
    )
    # A second pass finds nothing more to do.
    assert_report(recover(folder), refused=[newer], live=[held])
    got = drain(folder)
    assert sorted((x["tag"], x["i"]) for x in got) == sorted(
        [("a", i) for i in range(50)] + [("b", i) for i in range(20, 50)] + [("r", i) for i in range(5)]
    )


def test_missing_folder_is_an_empty_one(tmp_path):
    report = recover(tmp_path / "nothing-here")
    assert_report(report)
    assert not (tmp_path / "nothing-here").exists()
