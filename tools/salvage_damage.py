"""What ``turbo-queue salvage`` gives back of really damaged batch files (README, salvage).

Writes a batch of 10,000 items of ~200 bytes (100 chunks), damages a copy of it in each way
(truncation, zeroed pages, flipped bits), and prints what SQLite and ``peek`` make of it and what
salvage reads back.

    python tools/salvage_damage.py [SEED]
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import sys
import tempfile
from typing import List

from turbo_queue import Enqueuer, _salvage
from turbo_queue.monitor import read_items

CASES = ["truncate 90%", "truncate 50%", "flip 1 byte x 5 pages", "flip 1 byte x 20 pages", "zero page 1",
         "zero pages 2-4", "zero the items root page"]


def _batch(folder: str, items: int = 10_000) -> str:
    with Enqueuer(folder, max_batch_delay=3600) as producer:
        producer.put_many([{"n": i, "pad": os.urandom(75).hex()} for i in range(items)])
    (name,) = [name for name in os.listdir(folder) if name.startswith("ready_")]
    return os.path.join(folder, name)


def _sqlite_says(path: str) -> str:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
        check = str(conn.execute("PRAGMA quick_check").fetchone()[0]).splitlines()[0]
        conn.close()
    except sqlite3.Error as exc:
        check = str(exc)
    try:
        peek = f"peek reads {len(read_items(path, 10**6)[1])} items"
    except Exception as exc:  # what peek would say
        peek = f"peek: {type(exc).__name__}"
    return f"quick_check: {check[:40]}; {peek}"


def _damage(case: str, path: str, rng: random.Random) -> None:
    with open(path, "rb") as f:
        data = bytearray(f.read())
    size = int.from_bytes(data[16:18], "big")
    pages = len(data) // size
    if case.startswith("truncate"):
        data = data[: len(data) * int(case.split()[1][:-1]) // 100]
    elif case.startswith("flip"):
        for page in rng.sample(range(2, pages + 1), int(case.split()[4])):
            data[(page - 1) * size + rng.randrange(size)] ^= 1 << rng.randrange(8)
    elif case == "zero page 1":
        data[0:size] = bytes(size)
    elif case == "zero the items root page":
        with sqlite3.connect(path) as conn:
            (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'items'").fetchone()
        data[(root - 1) * size : root * size] = bytes(size)
    else:
        for page in (2, 3, 4):
            data[(page - 1) * size : page * size] = bytes(size)
    with open(path, "wb") as f:
        f.write(data)


def main(argv: List[str]) -> None:
    rng = random.Random(int(argv[0]) if argv else 1)
    for case in CASES:
        folder = tempfile.mkdtemp(prefix="salvage-")
        try:
            path = _batch(folder)
            _damage(case, path, rng)
            salvage = _salvage.read(path)
            chunks, skip = salvage.unacknowledged()
            print(f"{case:26} {_sqlite_says(path)}")
            print(f"{'':26} salvage: {sum(c.n for c in chunks) - skip:,} of 10,000 items, {len(chunks)} of 100 "
                  f"chunks ({salvage.by_sqlite} read by SQLite); missing {salvage.missing()[:5]}")
        finally:
            shutil.rmtree(folder)


if __name__ == "__main__":
    main(sys.argv[1:])
