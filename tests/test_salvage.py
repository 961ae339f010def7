"""``turbo-queue salvage``: every intact chunk of a really damaged batch file comes back as a new
ready_ batch; the damaged file is never changed."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import sqlite3
from typing import List, Tuple

import pytest

from turbo_queue import Dequeuer, Enqueuer, _batchfile
from turbo_queue.cli import main

from .support import listing
from .support.commands import run

ITEMS = 5_000  # in chunks of 100, each ~20 kB: a cell and its overflow chain of 4 kB pages


def _batch(folder: str, state: str = "bad") -> str:
    """A real batch of distinct ~200-byte items, renamed to ``state``; its path."""
    with Enqueuer(folder, max_batch_delay=3600) as producer:
        producer.put_many([{"n": i, "pad": hashlib.sha256(str(i).encode()).hexdigest() * 3} for i in range(ITEMS)])
    (name,) = listing(folder)["ready"]
    path = os.path.join(folder, name.replace("ready_", f"{state}_", 1))
    os.rename(os.path.join(folder, name), path)
    return path


def _fingerprint(path: str) -> Tuple[bytes, int]:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).digest(), os.stat(path).st_mtime_ns


def _drain(folder: str) -> List[dict]:
    got: List[dict] = []
    with Dequeuer(folder) as consumer:
        try:
            while True:
                got += consumer.get_many(10_000, timeout=0.5)
        except queue.Empty:
            pass
    return got


def _chunk_pages(path: str) -> List[Tuple[int, int]]:
    """(first, page) of each chunk: the page holding a piece from the middle of its bytes (one of
    its overflow pages)."""
    with open(path, "rb") as f:
        image = f.read()
    size = int.from_bytes(image[16:18], "big")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT first, data FROM items ORDER BY first").fetchall()
    found = []
    for first, data in rows:
        at = image.find(data[2000:2100])  # a piece from the middle: in an overflow page
        assert at > 0
        found.append((first, at // size + 1))
    return found


def test_a_file_truncated_to_90_percent_gives_back_every_intact_chunk(folder):
    path = _batch(folder)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) * 9 // 10)
    with sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True) as conn:  # what peek met before
        with pytest.raises(sqlite3.DatabaseError, match="malformed"):
            conn.execute("SELECT count(*) FROM items").fetchone()
    before = _fingerprint(path)

    result = run("salvage", path)

    assert result.returncode == 1, result.stderr  # some items could not be read
    assert _fingerprint(path) == before  # never changed
    (new,) = listing(folder)["ready"]
    assert f"in {new}" in result.stdout
    got = _drain(folder)
    lost = int(result.stdout.split("could not read: items ")[1].split("..")[0])
    assert lost >= ITEMS * 8 // 10  # about 90% of the chunks lie wholly in the first 90% of the file
    assert [item["n"] for item in got] == list(range(lost))
    assert f"could not read: items {lost}..{ITEMS - 1}" in result.stdout
    assert listing(folder)["bad"] == [os.path.basename(path)]


def test_bit_flips_lose_only_the_chunks_they_hit(folder):
    path = _batch(folder)
    pages = dict(_chunk_pages(path))
    hit = [700, 2300, 4100]
    with open(path, "r+b") as f:
        size = int.from_bytes(f.read(18)[16:18], "big")
        for first in hit:
            f.seek((pages[first] - 1) * size + 1000)
            byte = f.read(1)[0]
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte ^ 0x10]))
    before = _fingerprint(path)

    result = run("salvage", path, "--json")

    assert result.returncode == 1, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["missing"] == [{"first": first, "last": first + 99} for first in hit]
    assert outcome["items"] == ITEMS - 300
    assert _fingerprint(path) == before
    got = [item["n"] for item in _drain(folder)]
    assert got == [n for n in range(ITEMS) if n // 100 * 100 not in hit]


def test_a_file_sqlite_does_not_call_a_database_gives_back_everything(folder):
    path = _batch(folder)
    with open(path, "r+b") as f:
        f.write(bytes(100))  # the header: page size, schema cookie... all gone
    result = run("salvage", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SQLite" in result.stdout
    assert [item["n"] for item in _drain(folder)] == list(range(ITEMS))


def test_only_unacknowledged_items_come_back(folder):
    path = _batch(folder)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = 1234 WHERE key = 'acked'")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    result = run("salvage", path, "--json")
    outcome = json.loads(result.stdout)
    assert outcome["acked"] == 1234 and outcome["missing"][0]["first"] > 1234
    got = [item["n"] for item in _drain(folder)]
    assert got == list(range(1234, outcome["missing"][0]["first"]))


def test_dry_run_writes_nothing(folder):
    path = _batch(folder)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) * 9 // 10)
    result = run("salvage", path, "--dry-run")
    assert "would give back" in result.stdout
    assert os.listdir(folder) == [os.path.basename(path)]


def test_nothing_readable_writes_nothing(folder):
    path = os.path.join(folder, "bad_1_00000000-0000-4000-8000-000000000000.db")
    with open(path, "wb") as f:
        f.write(os.urandom(50_000))
    result = run("salvage", path)
    assert result.returncode == 1
    assert "gave back 0 items" in result.stdout
    assert os.listdir(folder) == [os.path.basename(path)]
    assert run("salvage", os.path.join(folder, "missing.db")).returncode == 2


def test_a_split_chunk_is_salvaged_whole(folder, monkeypatch, capsys):
    monkeypatch.setattr(_batchfile, "LENGTH_LIMIT", 20_000)  # chunks above it are stored in parts (format 3)
    big = [b"\x05" * 60_000, b"\x06" * 60_000]
    with Enqueuer(folder, max_batch_delay=3600) as producer:
        producer.put_many([b"a", b"b"])
        producer.put(big[0])
        producer.flush()
        producer.put(big[1])
    names = listing(folder)["ready"]
    for name in names:
        os.rename(os.path.join(folder, name), os.path.join(folder, name.replace("ready_", "bad_", 1)))
    for name in listing(folder)["bad"]:
        path = os.path.join(folder, name)
        with open(path, "r+b") as f:
            f.write(bytes(100))  # SQLite cannot open it: the pages give the parts back
        assert main(["salvage", "-q", path]) == 0, capsys.readouterr().out
    got = _drain(folder)
    assert sorted(got) == sorted([b"a", b"b", *big])
