"""Large items: a chunk bounded by bytes as well as by count, and items larger than SQLite's limit."""

from __future__ import annotations

import os
import pickle
import sqlite3
from typing import List, Tuple

import pytest

from turbo_queue import Dequeuer, Enqueuer, Queue

from .support import listing


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
