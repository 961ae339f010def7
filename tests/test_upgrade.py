"""A folder left by turbo-queue 0.5.2 or 0.8.0 drains with the current code.

The old files are made here as those versions made them: a SQLite file with one table
``logs(log_data json)``, one ``json.dumps`` text per row, committed when the batch rolled, under
the names each version used.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import sqlite3
import time
import uuid
from typing import List

import pytest

from turbo_queue import recover

from tests.support import drain


def old_batch(folder: str, name: str, items: List[object], committed: bool = True) -> str:
    """A file as 0.5.2/0.8.0 wrote it; ``committed=False`` leaves the rows in an open transaction."""
    path = os.path.join(folder, name)
    conn = sqlite3.connect(path)
    conn.execute("pragma synchronous=0;")
    conn.execute("CREATE TABLE IF NOT EXISTS logs (log_data json)")
    conn.commit()
    conn.executemany("INSERT INTO logs (log_data) VALUES (?)", [(json.dumps(item),) for item in items])
    if committed:
        conn.commit()
    conn.close()
    return path


def old_name(state: str, epoch: int, tail: str = ".db") -> str:
    return f"{state}_{epoch}_{uuid.uuid4()}{tail}"


def protocol_files(folder: str) -> List[str]:
    return sorted(name for name in os.listdir(folder) if not name.startswith("."))


def test_a_folder_of_0_8_0_drains_in_the_order_it_was_loaded(folder):
    now = int(time.time())
    old_batch(folder, old_name("ready", now - 30), [{"n": 0}, {"n": 1}])
    old_batch(folder, old_name("unload", now - 20, ".db_7"), [{"n": 2}, {"n": 3}])  # a Dequeue(7) was reading it
    old_batch(folder, old_name("ready", now - 10, "_recovered.db"), [{"n": 4}])  # renamed by on_start_cleanup()
    old_batch(folder, old_name("load", now), [{"n": 5}, {"n": 6}])  # rolled by nobody, committed by hand
    old_batch(folder, old_name("load", now), [{"n": 99}], committed=False)  # what a stopped producer left

    items = drain(folder)

    assert items == [{"n": n} for n in range(7)]
    assert protocol_files(folder) == []


def test_a_folder_of_0_5_2_drains_ready_and_orphaned_files(folder):
    now = int(time.time())
    old_batch(folder, old_name("ready", now - 4), ["a", "b"])
    old_batch(folder, old_name("chosen", now - 3), ["c"])  # its Dequeue died reading it
    old_batch(folder, old_name("chosen", now - 2, ".db_3"), ["d"])  # with a proc_num
    old_batch(folder, old_name("loading", now - 1), ["e"])

    items = drain(folder)

    assert items == ["a", "b", "c", "d", "e"]
    assert protocol_files(folder) == []


def test_old_values_come_back_as_0_5_2_stored_them(folder):
    values = [0, {}, [], "", None, 2 ** 80, math.inf, {"nested": [1, 2.5, "x"]}]
    old_batch(folder, old_name("ready", int(time.time())), values)

    items = drain(folder)

    assert items == values


def test_recover_converts_old_names_and_reports_them(folder):
    name = old_name("load", int(time.time()))
    old_batch(folder, name, list(range(250)))

    dry = recover(folder, dry_run=True)
    assert dry.converted == [name]
    assert os.path.exists(os.path.join(folder, name)), "a dry run touched the file"

    report = recover(folder)

    assert report.converted == [name]
    (ready,) = protocol_files(folder)
    assert ready.startswith("ready_") and ready.split("_")[1] == name.split("_")[1], "the epoch was not kept"
    assert drain(folder) == list(range(250))


def test_an_old_file_that_fails_its_check_is_quarantined_not_deleted(folder):
    name = old_name("load", int(time.time()))
    with open(os.path.join(folder, name), "wb") as file:
        file.write(os.urandom(8192))

    report = recover(folder)

    assert report.quarantined == [name]
    (bad,) = protocol_files(folder)
    assert bad.startswith("bad_")
    with open(os.path.join(folder, bad), "rb") as file:
        assert len(file.read()) == 8192


def test_an_old_file_with_no_rows_is_removed(folder):
    name = old_name("unload", int(time.time()))
    old_batch(folder, name, [])

    report = recover(folder)

    assert report.removed == [name] and protocol_files(folder) == []


def _drain_into(folder: str, results: "multiprocessing.Queue[List[int]]") -> None:
    results.put(drain(folder, timeout=2.0))  # type: ignore[arg-type]


def test_two_consumers_share_an_old_backlog_without_loss_or_duplicates(folder):
    now = int(time.time())
    expected = []
    for batch in range(40):
        items = list(range(batch * 50, batch * 50 + 50))
        old_batch(folder, old_name("ready", now - 40 + batch), items)
        expected.extend(items)
    results: "multiprocessing.Queue[List[int]]" = multiprocessing.get_context("spawn").Queue()
    consumers = [multiprocessing.get_context("spawn").Process(target=_drain_into, args=(folder, results))
                 for _ in range(2)]
    for process in consumers:
        process.start()
    got = results.get(timeout=60) + results.get(timeout=60)
    for process in consumers:
        process.join(10)

    assert sorted(got) == expected
    assert protocol_files(folder) == []


@pytest.mark.parametrize("state", ["ready", "chosen", "loading", "bad"])
def test_files_of_the_current_format_are_not_taken_for_old_ones(folder, state):
    from turbo_queue import _upgrade

    assert _upgrade.old_name(f"{state}_{int(time.time())}_{uuid.uuid4()}.db") is None
