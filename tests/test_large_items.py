"""Large items: a chunk bounded by bytes as well as by count, and items larger than SQLite's limit."""

from __future__ import annotations

import os
import pickle
import queue
import sqlite3
from typing import List, Tuple

import pytest

from turbo_queue import Dequeuer, Enqueuer, Queue, _batchfile, recover, set_aside
from turbo_queue._codecs import CHUNK_BYTES
from turbo_queue.monitor import read_items

from .support import listing, run_python


def _rows(folder: str) -> List[Tuple[int, int]]:
    """(items, bytes) of each chunk row of the folder's ready_ batches."""
    rows: List[Tuple[int, int]] = []
    for name in listing(folder)["ready"]:
        with sqlite3.connect(os.path.join(folder, name)) as conn:
            rows += conn.execute("SELECT n, length(data) FROM items ORDER BY first").fetchall()
    return rows


@pytest.mark.parametrize("many", [False, True], ids=["put", "put_many"])
def test_a_chunk_holds_at_most_chunk_bytes(folder, many):
    items = [bytes([i]) * 300_000 for i in range(20)]  # 100 of them a chunk would be 30 MB
    with Enqueuer(folder, chunk_bytes=1_000_000) as producer:
        if many:
            producer.put_many(items)
        else:
            for item in items:
                producer.put(item)
    rows = _rows(folder)
    assert sum(n for n, _ in rows) == 20
    assert all(size <= 1_000_000 for _, size in rows), rows
    assert max(n for n, _ in rows) == 3  # as many as fit, not one a chunk
    with Dequeuer(folder) as consumer:
        got = []
        while len(got) < 20:
            got += consumer.get_many(100, timeout=5)
    assert sorted(got) == sorted(items)


def test_an_item_larger_than_chunk_bytes_is_a_chunk_of_its_own(folder):
    items = [b"a" * 10, b"b" * 50_000, b"c" * 10, b"d" * 10]
    with Enqueuer(folder, chunk_bytes=1_000) as producer:
        for item in items:
            producer.put(item)
        producer.put_many(items)
    assert [n for n, _ in _rows(folder)] == [1, 1, 2, 1, 1, 1, 1]  # put_many splits a list evenly
    with Dequeuer(folder) as consumer:
        assert consumer.get_many(100, timeout=5) == items + items


def test_the_default_bounds_a_chunk_of_1_mb_items(folder):
    items = [bytes([i]) * 1_000_000 for i in range(10)]  # distinct: pickle would store one list of copies once
    with Queue(path=folder) as queue:
        queue.put_many(items[:5])
        for item in items[5:]:
            queue.put(item)
        queue.flush()
        assert [n for n, _ in _rows(folder)] == [1] * 10
        got: List[bytes] = []
        while len(got) < 10:
            got += queue.get_many(100, timeout=5)
        assert got == items


def test_set_aside_bounds_its_chunks_by_bytes_too(folder):
    items = [bytes([i]) * 300_000 for i in range(20)]  # what a sink might set aside: large messages
    name = set_aside(folder, items, "refused by the broker")
    with sqlite3.connect(os.path.join(folder, name)) as conn:
        rows = conn.execute("SELECT n, length(data) FROM items ORDER BY first").fetchall()
    assert sum(n for n, _ in rows) == 20 and all(size <= CHUNK_BYTES for _, size in rows), rows


@pytest.mark.parametrize("value", [0, -1, 1.5, "1000", True, None])
def test_chunk_bytes_is_checked_at_construction(folder, value):
    for make in (Enqueuer, lambda f, **kw: Queue(path=f, **kw)):
        with pytest.raises(ValueError, match="chunk_bytes must be a positive integer"):
            make(folder, chunk_bytes=value)


def test_chunk_bytes_travels_with_a_pickled_enqueuer(folder):
    producer = Enqueuer(folder, chunk_bytes=12_345)
    try:
        copy = pickle.loads(pickle.dumps(producer))
        assert copy.chunk_bytes == 12_345
        copy.close()
    finally:
        producer.close()


# -- chunks larger than SQLite's length limit: split into parts (format 3) ------------------------

#: SQLite's length limit for these tests, lowered from 1,000,000,000 so that items of a few
#: hundred kB take the path a 1 GB item takes.
LIMIT = 20_000


@pytest.fixture
def low_limit(monkeypatch):
    monkeypatch.setattr(_batchfile, "LENGTH_LIMIT", LIMIT)


def _meta(path: str) -> dict:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT key, value FROM meta"))


def _parts(path: str) -> List[Tuple[int, int, int]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT first, seq, length(data) FROM parts ORDER BY first, seq").fetchall()


def test_sqlite_refuses_a_value_above_the_lowered_limit(folder, low_limit):
    # The limit is SQLite's own, enforced: without the split a large chunk would be refused.
    conn = sqlite3.connect(os.path.join(folder, "probe.db"))
    _batchfile.limit_length(conn)
    conn.execute("CREATE TABLE t (data BLOB)")
    with pytest.raises(sqlite3.DataError, match="too big"):
        conn.execute("INSERT INTO t VALUES (?)", (b"x" * (LIMIT + 1),))
    conn.close()


@pytest.mark.parametrize("codec, big", [("pickle", {"blob": b"\x01" * 70_000}), ("json", ["x" * 70_000]),
                                        ("raw", b"\x02" * 70_000)])
def test_a_chunk_above_sqlites_limit_is_split_into_parts_and_comes_back_whole(folder, low_limit, codec, big):
    small = "s" if codec == "raw" else {"small": 1}
    with Enqueuer(folder, codec=codec) as producer:
        producer.put(small)
        producer.put(big)       # the chunk [small, big, small] is about 70 kB: four parts
        producer.put(small)
        producer.flush()
        producer.put_many([big, small])
    names = listing(folder)["ready"]
    assert len(names) == 2
    for name in names:
        path = os.path.join(folder, name)
        assert _meta(path)["format"] == 3
        parts = _parts(path)
        assert len(parts) == 4 and all(size <= LIMIT for _, _, size in parts)
    with Dequeuer(folder) as consumer:
        assert consumer.get_many(10, timeout=5) == [small, big, small]
        assert consumer.get_many(10, timeout=5) == [big, small]
    assert os.listdir(folder) == []


def test_a_batch_without_a_split_chunk_stays_format_2(folder, low_limit):
    # Readers of format 2 (turbo_queue before format 3) read every batch that needs no parts.
    with Enqueuer(folder) as producer:
        producer.put_many([b"x" * 1000] * 10)
    (name,) = listing(folder)["ready"]
    path = os.path.join(folder, name)
    assert _meta(path)["format"] == 2
    with sqlite3.connect(path) as conn:
        assert [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == [
            "meta", "items"]


def test_a_reader_of_format_2_refuses_a_split_batch_and_leaves_it_as_it_is(folder, low_limit, monkeypatch, caplog):
    with Enqueuer(folder) as producer:
        producer.put(b"x" * 50_000)
    (name,) = listing(folder)["ready"]
    with open(os.path.join(folder, name), "rb") as f:
        before = f.read()
    monkeypatch.setattr(_batchfile, "READABLE_VERSIONS", (1, 2))  # what the previous release reads
    with Dequeuer(folder) as consumer:
        with pytest.raises(queue.Empty):
            consumer.get(timeout=0.2)
    assert "batch format version 3 is not known" in caplog.text
    assert listing(folder)["ready"] == [name]
    with open(os.path.join(folder, name), "rb") as f:
        assert f.read() == before
    orphan = name.replace("ready_", "chosen_", 1)  # as if a consumer that could read it had died holding it
    os.rename(os.path.join(folder, name), os.path.join(folder, orphan))
    assert recover(folder).refused == [orphan]  # recovery of format 2 leaves it alone too
    with open(os.path.join(folder, orphan), "rb") as f:
        assert f.read() == before


def test_peek_reads_a_split_batch(folder, low_limit):
    big = b"y" * 50_000
    with Enqueuer(folder) as producer:
        producer.put_many([b"a", big, b"b"])
    (name,) = listing(folder)["ready"]
    meta, items = read_items(os.path.join(folder, name), 10)
    assert meta["format"] == 3 and items == [b"a", big, b"b"]


def test_a_damaged_part_sets_the_chunk_aside_whole(folder, low_limit, caplog):
    big = b"z" * 50_000
    with Enqueuer(folder) as producer:
        producer.put(big)
        producer.flush()
        producer.put(b"after")
    (path,) = [os.path.join(folder, name) for name in listing(folder)["ready"]
               if _meta(os.path.join(folder, name))["format"] == 3]
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE parts SET data = zeroblob(length(data)) WHERE seq = 1")
    with Dequeuer(folder) as consumer:
        assert consumer.get(timeout=5) == b"after"
        with pytest.raises(queue.Empty):  # the damaged batch was read too (the edit made it the newer one)
            consumer.get(timeout=0.5)
    (bad,) = listing(folder)["bad"]
    assert "checksum does not match" in caplog.text
    # The set-aside batch holds the damaged chunk as it was stored, in parts again.
    bad_path = os.path.join(folder, bad)
    assert _meta(bad_path)["format"] == 3 and len(_parts(bad_path)) == 3


def test_a_missing_part_quarantines_the_batch(folder, low_limit, caplog):
    with Enqueuer(folder) as producer:
        producer.put(b"z" * 50_000)
    (name,) = listing(folder)["ready"]
    with sqlite3.connect(os.path.join(folder, name)) as conn:
        conn.execute("DELETE FROM parts WHERE seq = 1")  # a missing last part: the checksum tells
    with Dequeuer(folder) as consumer:
        with pytest.raises(queue.Empty):
            consumer.get(timeout=0.2)
    assert listing(folder)["bad"] == [name.replace("ready_", "bad_", 1)]
    assert "part 1 of the chunk of item 0 is missing" in caplog.text


def _available_mb() -> int:
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) // 1024


#: The one real round trip of an item above SQLite's own limit: a producer process and this
#: consumer each hold it about three times at their peaks, so it needs memory to spare.
BIG = 1_100_000_000
BIG_NEEDS_MB = 9_000


@pytest.mark.skipif(_available_mb() < BIG_NEEDS_MB,
                    reason=f"a real 1.1 GB item needs {BIG_NEEDS_MB} MB of available memory; the split path "
                           f"is tested with SQLite's limit lowered above")
def test_a_real_item_above_1_gb_moves_between_processes(folder):
    run_python(
        "import sys; from turbo_queue import Enqueuer\n"
        "with Enqueuer(sys.argv[1]) as producer:\n"
        f"    producer.put(b'\\x07' * {BIG})\n",
        folder,
    )
    (name,) = listing(folder)["ready"]
    assert _meta(os.path.join(folder, name))["format"] == 3
    with Dequeuer(folder) as consumer:
        item = consumer.get(timeout=60)
        assert len(item) == BIG and item.count(b"\x07") == BIG
        del item
        with pytest.raises(queue.Empty):
            consumer.get(timeout=0.1)
    assert os.listdir(folder) == []


def test_recovery_puts_back_a_split_batch_whose_consumer_died(folder, low_limit):
    big = b"r" * 50_000
    with Enqueuer(folder) as producer:
        producer.put_many([b"first", big, b"last"])
    (name,) = listing(folder)["ready"]
    orphan = name.replace("ready_", "chosen_", 1)  # as a consumer killed while holding it leaves it
    os.rename(os.path.join(folder, name), os.path.join(folder, orphan))
    report = recover(folder)
    assert report.requeued == [orphan]
    with Dequeuer(folder) as consumer:
        assert consumer.get_many(10, timeout=5) == [b"first", big, b"last"]
