"""Damaged chunks and poison items: set aside in a ``bad_`` file, never delivered changed or forever.

Real processes die here by SIGKILL, as a consumer does when an item makes it run out of memory
or crash in C code; recovery counts those crashes in the batch file.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import sqlite3
import time
import uuid
from typing import Any, List

import pytest

from turbo_queue import Dequeuer, Enqueuer, _batchfile, recover
from turbo_queue._codecs import get_codec

from tests.support import drain, listing, read_batch

FORK = multiprocessing.get_context("fork")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Bomb:
    """An item whose unpickling kills the process (as running out of memory would)."""

    def __reduce__(self):
        return _die, ()


def put(folder: str, items: List[Any], chunk_size: int = 10) -> None:
    with Enqueuer(folder, batch_size=10_000, chunk_size=chunk_size) as producer:
        producer.put_many(items)


def meta_of(path: str) -> dict:
    return read_batch(path, 0)[0]


def _consume(folder: str, out: str, fatal: object, many: int) -> None:
    """Write every item got to ``out``; die (SIGKILL) on ``fatal``, as a crash in processing.

    ``many``: take items with get_many(many), else one at a time.
    """
    consumer = Dequeuer(folder, recover_every=3600)
    with open(out, "a") as report:
        while True:
            try:
                items = consumer.get_many(many, timeout=0.2) if many else [consumer.get(timeout=0.2)]
            except queue.Empty:
                consumer.close()
                return
            report.write("".join(f"{item!r}\n" for item in items))
            report.flush()
            if fatal in items:
                _die()


def run_consumers(folder: str, out: str, fatal: object = None, many: int = 0, limit: int = 10) -> List[int]:
    """Start consumers one after the other, recovering after each crash, until one finishes.

    Returns the exit codes of those that ran.
    """
    codes = []
    for _ in range(limit):
        proc = FORK.Process(target=_consume, args=(folder, out, fatal, many))
        proc.start()
        proc.join(60)
        assert proc.exitcode is not None, "a consumer did not finish"
        codes.append(proc.exitcode)
        if proc.exitcode == 0:
            return codes
        recover(folder)
    raise AssertionError(f"consumers kept dying: {codes}")


def take_all(consumer: Dequeuer) -> List[Any]:
    out: List[Any] = []
    while True:
        try:
            out += consumer.get_many(1000, block=False)
        except queue.Empty:
            return out


def received(out: str) -> List[Any]:
    with open(out) as report:
        return [eval(line) for line in report]  # the test's own reprs of ints and strings


# -- checksums ---------------------------------------------------------------------------------------


def flip_inside(path: str, marker: bytes) -> None:
    data = bytearray(open(path, "rb").read())
    at = data.index(marker)
    data[at] ^= 0x01
    with open(path, "r+b") as f:
        f.write(data)


def test_a_chunk_whose_bytes_changed_is_set_aside_and_never_delivered(folder, caplog):
    items = [f"item-{i:03d}" for i in range(50)]
    put(folder, items)
    (name,) = listing(folder)["ready"]
    flip_inside(os.path.join(folder, name), b"item-025")  # the chunk of items 20..29

    got = drain(folder)

    assert got == items[:20] + items[30:]  # nothing changed comes out, the rest does
    (bad,) = listing(folder)["bad"]
    meta = meta_of(os.path.join(folder, bad))
    assert meta["set_aside_from"] == name.replace("ready_", "chosen_", 1) and meta["set_aside_first"] == 20
    assert "checksum does not match" in meta["reason"] and "checksum does not match" in caplog.text
    # The set-aside file keeps the checksum the chunk was written with: renamed ready_, it is
    # set aside again rather than delivered changed.
    os.rename(os.path.join(folder, bad), os.path.join(folder, bad.replace("bad_", "ready_", 1)))
    assert drain(folder) == []
    assert len(listing(folder)["bad"]) == 1


def test_a_damaged_chunk_after_items_in_hand_is_set_aside_once_they_are_returned(folder):
    items = [f"item-{i:03d}" for i in range(30)]
    put(folder, items)
    (name,) = listing(folder)["ready"]
    flip_inside(os.path.join(folder, name), b"item-015")
    with Dequeuer(folder) as consumer:
        assert consumer.get_many(5) == items[:5]
        assert consumer.get_many(100) == items[5:10]  # stops before the damaged chunk
        assert consumer.get_many(100) == items[20:]
    assert drain(folder) == [] and len(listing(folder)["bad"]) == 1


def test_a_batch_of_format_1_is_still_read(folder):
    """Format 1 is format 2 without the checksum column."""
    codec = get_codec("pickle")
    path = os.path.join(folder, f"ready_{int(time.time())}_{uuid.uuid4()}.db")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID")
    conn.execute("CREATE TABLE items (first INTEGER PRIMARY KEY, n INTEGER NOT NULL, data BLOB NOT NULL)")
    conn.executemany("INSERT INTO meta VALUES (?, ?)",
                     [("format", 1), ("codec", "pickle"), ("count", 5), ("acked", 0), ("created_by", "x:1")])
    conn.execute("INSERT INTO items VALUES (0, 3, ?)", (codec.encode_many(["a", "b", "c"]),))
    conn.execute("INSERT INTO items VALUES (3, 2, ?)", (codec.encode_many(["d", "e"]),))
    conn.commit()
    conn.close()
    assert read_batch(path, 10)[1] == ["a", "b", "c", "d", "e"]
    assert drain(folder) == ["a", "b", "c", "d", "e"]
    assert not any(listing(folder).values()), "the folder is empty"


# -- poison items that kill the consumer ---------------------------------------------------------------


def test_an_item_that_kills_its_consumer_when_decoded_is_set_aside_after_max_crashes(folder, tmp_path, caplog):
    items: List[Any] = list(range(100))
    items[47] = Bomb()
    put(folder, items)
    out = str(tmp_path / "got.txt")

    codes = run_consumers(folder, out)

    # Dequeuer's default max_crashes is 3: the first crash shows where it holds, the next three
    # at that item set its chunk aside.
    assert codes[:-1] == [-signal.SIGKILL] * (len(codes) - 1) and 2 <= len(codes) - 1 <= 4
    got = received(out)
    assert sorted(set(got)) == list(range(40)) + list(range(50, 100))  # all but the chunk 40..49
    (bad,) = listing(folder)["bad"]
    meta = meta_of(os.path.join(folder, bad))
    assert meta["set_aside_first"] == 40 and meta["acked"] == 0
    assert "consumers died holding item 40" in meta["reason"]
    assert listing(folder)["ready"] == [] and listing(folder)["chosen"] == []


def test_an_item_that_kills_its_consumer_while_processed_is_set_aside_from_that_item(folder, tmp_path):
    items = list(range(100))
    put(folder, items)
    out = str(tmp_path / "got.txt")

    codes = run_consumers(folder, out, fatal=63)

    assert codes[-1] == 0 and len(codes) - 1 <= 4
    got = received(out)
    # The chunk 60..69 is set aside from item 63: 60..62 were acknowledged before the crashes.
    assert set(got) == set(range(64)) | set(range(70, 100))
    assert got.count(63) == len(codes) - 1  # 63 once per crash, and never after
    (bad,) = listing(folder)["bad"]
    meta = meta_of(os.path.join(folder, bad))
    assert (meta["set_aside_first"], meta["acked"]) == (60, 3)
    assert read_batch(os.path.join(folder, bad), 100)[1] == [63, 64, 65, 66, 67, 68, 69]


def test_get_many_read_carefully_returns_one_chunk_so_the_crash_names_it(folder, tmp_path):
    put(folder, list(range(100)))  # chunks of 10
    out = str(tmp_path / "got.txt")

    codes = run_consumers(folder, out, fatal=47, many=25)

    assert codes[-1] == 0 and len(codes) - 1 <= 4
    (bad,) = listing(folder)["bad"]
    meta = meta_of(os.path.join(folder, bad))
    assert meta["set_aside_first"] == 40  # the chunk of item 47, not the one a call of 25 began in
    aside = read_batch(os.path.join(folder, bad), 100)[1]
    assert 47 in aside and set(aside) <= set(range(40, 50))
    assert set(received(out)) >= set(range(100)) - set(aside)


def test_one_crash_is_not_poison_the_batch_is_read_carefully_and_fully_delivered(folder, tmp_path):
    put(folder, list(range(100)))
    out = str(tmp_path / "got.txt")
    proc = FORK.Process(target=_consume, args=(folder, out, 30, 0))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    report = recover(folder)
    (name,) = report.requeued
    ready = os.path.join(folder, listing(folder)["ready"][0])
    assert (meta_of(ready)["crashes"], meta_of(ready)["crashed_at"]) == (1, meta_of(ready)["acked"])

    with Dequeuer(folder) as consumer:
        first = consumer.get()
        second = consumer.get()  # acknowledges the first at once: the batch is read carefully
        assert meta_of(os.path.join(folder, listing(folder)["chosen"][0]))["acked"] == first + 1
        rest = consumer.get_many(1000)
        assert len(rest) <= 10  # read carefully: one chunk per call
        rest += take_all(consumer)
    assert [first, second] + rest == list(range(first, 100))
    assert listing(folder)["bad"] == []


def test_the_crash_count_starts_again_when_a_consumer_got_further(folder):
    put(folder, list(range(50)))
    (name,) = listing(folder)["ready"]
    path = os.path.join(folder, name)
    assert _batchfile.record_crash(path) == 1
    assert _batchfile.record_crash(path) == 2
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = 10 WHERE key = 'acked'")
    conn.commit()
    conn.close()
    assert _batchfile.record_crash(path) == 1
    assert (meta_of(path)["crashes"], meta_of(path)["crashed_at"]) == (1, 10)


@pytest.mark.parametrize("max_crashes", [1, 2])
def test_max_crashes_is_the_number_of_crashes_at_one_item(folder, max_crashes):
    put(folder, list(range(30)))
    (name,) = listing(folder)["ready"]
    path = os.path.join(folder, name)
    for _ in range(max_crashes - 1):
        _batchfile.record_crash(path)
    assert drain(folder) == list(range(30))  # below the limit: delivered
    put(folder, list(range(30)))
    (name,) = listing(folder)["ready"]
    for _ in range(max_crashes):
        _batchfile.record_crash(os.path.join(folder, name))
    with Dequeuer(folder, max_crashes=max_crashes) as consumer:
        assert take_all(consumer) == list(range(10, 30))
    assert len(listing(folder)["bad"]) == 1
