"""The counts behind qsize() cost what the live processes cost: a gone process leaves no file."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
import traceback
from typing import List

import pytest

import turbo_queue
from turbo_queue import _counters


def counter_files(queue: turbo_queue.Queue) -> List[str]:
    return sorted(name for name in os.listdir(os.path.join(queue.path, _counters.FOLDER)) if name.endswith(".cnt"))


def mapped_counter_files() -> int:
    with open("/proc/self/maps") as maps:
        return sum(1 for line in maps if line.rstrip().endswith(".cnt"))


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


def test_ten_thousand_short_lived_processes():
    """Each puts one item and exits; the parent's counts, files and mappings stay those of the living."""
    queue = turbo_queue.Queue()  # in /dev/shm, as the Pool users' queues are
    total, at_once = 10_000, 16
    running: List[int] = []
    for n in range(total):
        pid = os.fork()
        if pid == 0:  # the child: one item, a normal close, gone
            code = 1
            try:
                queue.put(n)
                queue.close()
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        running.append(pid)
        if len(running) >= at_once:
            _, status = os.waitpid(running.pop(0), 0)
            assert status == 0
        if n % 1000 == 999:
            assert n + 1 - len(running) <= queue.qsize() <= n + 1  # the finished ones, and some running
    for pid in running:
        _, status = os.waitpid(pid, 0)
        assert status == 0

    assert queue.qsize() == total
    assert counter_files(queue) == []  # the parent has not put or got yet: no file of its own
    assert mapped_counter_files() <= 2
    got = queue.get_many(total, timeout=10)
    while len(got) < total:
        got += queue.get_many(total, timeout=10)
    assert sorted(got) == list(range(total))
    assert queue.qsize() == 0 and queue.empty()
    queue.close()


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


def test_a_fold_that_died_after_writing_the_total_counts_nothing_twice(folder):
    queue = turbo_queue.Queue(path=folder)
    where = os.path.join(folder, _counters.FOLDER)
    mine = _counters.Counters(folder)
    mine.add(_counters.PUT, 7)
    # What a fold that died between its two steps leaves: the total names the file it took in,
    # and the file is still there (its process gone: here, its lock dropped by hand).
    folded = _counters.Folded.open(where, create=True)
    folded.write((7, 0, 0), mine.name)
    folded.close()
    os.close(mine._fd)
    mine._fd = -1

    assert queue.qsize() == 7
    assert _counters.fold_dead(where) == 1
    assert queue.qsize() == 7 and not os.path.exists(mine.path)
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
