"""The counts behind qsize() cost what the live processes cost: a gone process leaves no file."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from typing import List

import pytest

import turbo_queue
from turbo_queue import _counters
from tests.support import run_python


def counter_files(queue: turbo_queue.Queue) -> List[str]:
    return sorted(name for name in os.listdir(os.path.join(queue.path, _counters.FOLDER)) if name.endswith(".cnt"))


def _put_one(queue: turbo_queue.Queue, n: int) -> None:
    queue.put(n)


def test_a_pool_that_replaces_its_workers_leaves_no_counter_file_per_worker(folder):
    queue = turbo_queue.Queue(path=folder)
    context = multiprocessing.get_context("fork")
    with context.Pool(2, maxtasksperchild=1) as pool:
        pool.starmap(_put_one, [(queue, n) for n in range(200)])
        pool.close()
        pool.join()

    assert queue.qsize() == 200
    assert len(counter_files(queue)) <= 1, counter_files(queue)  # at most the parent's own
    assert sorted(queue.get(timeout=10) for _ in range(200)) == list(range(200))
    queue.close()


FORKING = """
import os, sys, turbo_queue
queue = turbo_queue.Queue()  # in /dev/shm, as the Pool users' queues are
total, running = int(sys.argv[1]), []
for n in range(total):
    pid = os.fork()
    if pid == 0:  # the child: one item, a normal close, gone
        code = 1
        try:
            queue.put(n)
            queue.close()
            code = 0
        finally:
            os._exit(code)
    running.append(pid)
    if len(running) >= 16:
        assert os.waitpid(running.pop(0), 0)[1] == 0
for pid in running:
    assert os.waitpid(pid, 0)[1] == 0
size = queue.qsize()
files = [name for name in os.listdir(os.path.join(queue.path, ".counters")) if name.endswith(".cnt")]
with open("/proc/self/maps") as maps:
    mapped = sum(1 for line in maps if line.rstrip().endswith(".cnt"))
got = []
while len(got) < total:
    got += queue.get_many(total, timeout=30)
print(size, len(files), mapped, sorted(got) == list(range(total)), queue.qsize())
queue.close()
"""


@pytest.mark.timeout(900)
def test_ten_thousand_short_lived_processes():
    """Each puts one item and exits; the counts, files and mappings stay those of the living.

    Forked from a small program of its own, not from the test process, so that forking is cheap.
    """
    result = subprocess.run([sys.executable, "-c", FORKING, "10000"], capture_output=True, text=True, timeout=880)

    assert result.returncode == 0, result.stderr
    size, files, mapped, all_arrived, left = result.stdout.split()
    assert int(size) == 10_000
    assert int(files) == 0  # the program itself had not put or got yet: no file of its own
    assert int(mapped) <= 2
    assert all_arrived == "True" and int(left) == 0


def test_the_counts_of_a_killed_process_are_folded_by_the_next_reader(folder):
    queue = turbo_queue.Queue(path=folder)
    ready = multiprocessing.get_context("fork").Event()
    child = multiprocessing.get_context("fork").Process(target=_put_and_hang, args=(queue, ready))
    child.start()
    assert ready.wait(30)
    assert len(counter_files(queue)) == 1
    os.kill(child.pid, signal.SIGKILL)
    child.join()

    deadline = time.monotonic() + 10
    while counter_files(queue):
        assert queue.qsize() == 5  # before and after the fold: counted once
        assert time.monotonic() < deadline, "the killed process's counter file was never folded"
        time.sleep(0.1)
    assert queue.qsize() == 5
    queue.close()


def _put_and_hang(queue: turbo_queue.Queue, ready) -> None:  # type: ignore[no-untyped-def]
    for n in range(5):
        queue.put(n)
    queue.flush()
    ready.set()
    time.sleep(600)


DIED_MID_FOLD = """
import os, sys
from turbo_queue import _counters
from tests.support import run_python
mine = _counters.Counters(sys.argv[1])
mine.add(_counters.PUT, 7)
# What a fold of this file that died between its two steps leaves: the total names the file it
# took in, and the file is still there.
folded = _counters.Folded.open(os.path.join(sys.argv[1], _counters.FOLDER), create=True)
folded.write((7, 0, 0), mine.name)
print(mine.path)
sys.stdout.flush()
os._exit(0)  # gone without retiring: its lock is free, its file stays
"""


def test_a_fold_that_died_after_writing_the_total_counts_nothing_twice(folder):
    queue = turbo_queue.Queue(path=folder)
    left = run_python(DIED_MID_FOLD, folder).stdout.strip()
    assert os.path.exists(left)

    assert queue.qsize() == 7  # the reader may fold it first: either way, counted once
    _counters.fold_dead(os.path.join(folder, _counters.FOLDER))
    assert queue.qsize() == 7 and not os.path.exists(left)
    queue.close()


@pytest.mark.parametrize("closing", ["close", "exit"])
def test_a_process_that_leaves_normally_folds_its_own_counts(folder, closing):
    queue = turbo_queue.Queue(path=folder)
    code = f"""
import sys, turbo_queue
q = turbo_queue.Queue(path={folder!r})
q.put_many(list(range(3)))
print(q.get(timeout=10))
{"q.close()" if closing == "close" else ""}
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, capture_output=True)

    assert counter_files(queue) == []
    assert queue.qsize() == 2
    queue.close()
