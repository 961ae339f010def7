"""Crash tests: many real processes, SIGKILL at random points, recover() racing live processes.

Every count here is exact: each item carries a unique id, children report what they were handed
(a producer: which ``flush()`` calls returned; a consumer: which items ``get()`` returned) by
appending lines to a file with ``os.write`` (one syscall per report, so a SIGKILL loses at most
the report being written, never one that was written), and the folder's contents after recovery
are read back with the package's own reader.

Children are forked (``multiprocessing`` "fork" context) so that dozens of them stay cheap. The
random kill points use a random delay; everything else waits for a real condition with a deadline.
Each randomized test prints its seed in its failure messages (set TURBO_QUEUE_SEED to replay).
"""

from __future__ import annotations

import collections
import json
import multiprocessing
import os
import queue
import random
import signal
import time
from typing import Callable, Dict, List, Optional

import pytest

from turbo_queue import Dequeuer, Enqueuer, recover
from turbo_queue import _folder

from tests.support import drain, listing, wait_for
from tools.faults import folder as chaos_folder, processes as chaos_processes, tally as chaos_tally


# -- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def procs():
    """Start forked children; any still alive when the test ends is killed."""
    started: List[multiprocessing.Process] = []

    def start(target: Callable, *args: object) -> multiprocessing.Process:
        proc = chaos_processes.forked(target, *args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.is_alive():
            proc.kill()
        proc.join(chaos_processes.DEADLINE)


def join_ok(proc: multiprocessing.Process, what: str) -> None:
    proc.join(chaos_processes.DEADLINE)
    assert not proc.is_alive(), f"{what} still running after {chaos_processes.DEADLINE}s"
    assert proc.exitcode == 0, f"{what} exited {proc.exitcode}"


def kill(proc: multiprocessing.Process) -> None:
    chaos_processes.kill(proc)
    assert proc.exitcode == -signal.SIGKILL, f"child exited {proc.exitcode} before it was killed"


def report_line(fd: int, value: int) -> None:
    os.write(fd, b"%d\n" % value)


def sizes(folder: str, names: List[str]) -> Dict[str, int]:
    out = {}
    for name in names:
        try:
            out[name] = os.path.getsize(os.path.join(folder, name))
        except OSError:
            pass
    return out


def assert_folder_at_rest(folder: str, context: str, report: object = None) -> None:
    """After recover() with no live process: only ready_ files, each a sound SQLite database."""
    result = chaos_tally.Result(context)
    found = chaos_folder.check_files(folder, result, context)
    left = [name for kind, names in found.items() if kind != "ready" for name in names]
    assert result.failure_count == 0, "\n".join(result.failures) + f"\n{sizes(folder, left)} (bytes); {report}"


def make_item(source: int, i: int) -> dict:
    return {"id": source * 1_000_000 + i, "src": source, "i": i, "pad": "x" * 24}


# -- (a) and (b): many producers and consumers, nothing crashes ----------------------------------


def _produce(folder: str, source: int, count: int, seed: int) -> None:
    rng = random.Random(seed)
    with Enqueuer(folder, batch_size=150, chunk_size=20, max_batch_delay=0.005) as q:
        i = 0
        while i < count:
            if rng.random() < 0.1:
                n = min(rng.randint(2, 70), count - i)
                q.put_many([make_item(source, j) for j in range(i, i + n)])
                i += n
            else:
                q.put(make_item(source, i))
                i += 1
            if rng.random() < 0.002:
                q.flush()


def _consume(folder: str, done, out_path: str, seed: int) -> None:
    rng = random.Random(seed)
    got: List[int] = []
    with Dequeuer(folder, ack_every=rng.choice([7, 50, 1000]), recover_every=3600) as q:
        while True:
            finished = done.is_set()  # read before looking: an Empty after this saw everything
            try:
                if rng.random() < 0.5:
                    got.append(q.get(timeout=0.05)["id"])
                else:
                    got.extend(item["id"] for item in q.get_many(rng.randint(1, 120), timeout=0.05))
            except queue.Empty:
                if finished:
                    break
    with open(out_path, "w") as f:
        json.dump(got, f)


def _recover_loop(folder: str, stop, started, out_path: str) -> None:
    passes = passes_with_live = 0
    changes = []
    while not stop.is_set():
        passes += 1
        if passes % 3 == 0:
            recover(folder, dry_run=True)  # probes locks too; must change nothing either
            continue
        report = recover(folder)
        passes_with_live += bool(report.live)
        changes += [("requeued", n) for n in report.requeued]
        changes += [("quarantined", n) for n in report.quarantined]
        changes += [("refused", n) for n in report.refused]
        # A producer's hidden file taken between its open and its lock holds nothing, and the
        # producer retries with a new one (see _folder.create); removing any other file is a theft.
        changes += [("removed", n) for n in report.removed if not n.startswith(_folder.CREATING)]
        started.set()
    with open(out_path, "w") as f:
        json.dump({"passes": passes, "passes_with_live": passes_with_live, "changes": changes}, f)


def run_pipeline(folder: str, tmp_path, procs, seed: int, with_recover: bool) -> Optional[dict]:
    producers, consumers, per_producer = 3, 3, 7000
    rng = random.Random(seed)
    done, stop, started = chaos_processes.MP.Event(), chaos_processes.MP.Event(), chaos_processes.MP.Event()
    recover_out = str(tmp_path / "recover.json")
    looper = None
    if with_recover:
        looper = procs(_recover_loop, folder, stop, started, recover_out)
        wait_for(started.is_set, "first recover() pass", looper)
    outs = [str(tmp_path / f"consumer{c}.json") for c in range(consumers)]
    cons = [procs(_consume, folder, done, out, rng.randrange(2**32)) for out in outs]
    prods = [procs(_produce, folder, p, per_producer, rng.randrange(2**32)) for p in range(producers)]
    for n, proc in enumerate(prods):
        join_ok(proc, f"producer {n}")
    done.set()
    for n, proc in enumerate(cons):
        join_ok(proc, f"consumer {n}")
    stats = None
    if looper is not None:
        stop.set()
        join_ok(looper, "recover loop")
        with open(recover_out) as f:
            stats = json.load(f)

    received: List[int] = []
    for out in outs:
        with open(out) as f:
            received.extend(json.load(f))
    if with_recover:
        # A consumer that finds the last ready_ file locked for an instant by recover()'s probe
        # moves on (losing a claim is normal), so a batch may be left for the next consumer.
        received.extend(item["id"] for item in drain(folder))
    expected = {make_item(p, i)["id"] for p in range(producers) for i in range(per_producer)}
    counts = collections.Counter(received)
    duplicates = sorted(i for i, c in counts.items() if c > 1)
    missing = sorted(expected - set(counts))
    strange = sorted(set(counts) - expected)
    assert not missing and not duplicates and not strange, (
        f"seed {seed}: {len(missing)} lost (e.g. {missing[:5]}), {len(duplicates)} duplicated "
        f"(e.g. {duplicates[:5]}), {len(strange)} never put; recover loop: {stats}"
    )
    assert len(received) == producers * per_producer
    found = listing(folder)
    assert all(not names for names in found.values()), f"seed {seed}: left in the folder: {found}"
    return stats


def test_many_producers_and_consumers_deliver_every_item_exactly_once(folder, tmp_path, procs, seed):
    run_pipeline(folder, tmp_path, procs, seed, with_recover=False)


def test_recover_in_a_tight_loop_beside_live_processes_steals_nothing(folder, tmp_path, procs, seed):
    stats = run_pipeline(folder, tmp_path, procs, seed, with_recover=True)
    assert stats is not None
    assert stats["changes"] == [], f"seed {seed}: recover() took files of live processes: {stats['changes'][:10]}"
    # The check above means something only if recover() ran while files were held.
    assert stats["passes_with_live"] > 0, f"seed {seed}: recover() never overlapped a live file: {stats}"


# -- (c) producers killed at random points -------------------------------------------------------


def _produce_until_killed(folder: str, report_path: str, trial: int, seed: int) -> None:
    rng = random.Random(seed)
    fd = chaos_processes.open_report(report_path)
    flush_every = rng.choice([1, 7, 50, 120, 400])
    q = Enqueuer(
        folder,
        batch_size=rng.choice([30, 100, 1000]),
        chunk_size=rng.choice([1, 10, 40]),
        max_batch_delay=rng.choice([0.001, 0.01, 5.0]),
        codec=rng.choice(["pickle", "json"]),
    )
    i = 0
    next_flush = flush_every
    while i < 10_000_000:
        if rng.random() < 0.2:
            n = rng.randint(2, 30)
            q.put_many([make_item(trial, j) for j in range(i, i + n)])
            i += n
        else:
            q.put(make_item(trial, i))
            i += 1
        if i >= next_flush:
            q.flush()
            report_line(fd, i)  # items 0 .. i-1 were handed over
            next_flush = i + flush_every


def test_producer_killed_at_random_points_loses_nothing_it_handed_over(folder, tmp_path, procs, seed):
    rng = random.Random(seed)
    trials = 30
    for trial in range(trials):
        context = f"seed {seed}, trial {trial}"
        reports = str(tmp_path / f"producer{trial}.log")
        proc = procs(_produce_until_killed, folder, reports, trial, rng.randrange(2**32))
        wait_for(lambda: chaos_processes.count_lines(reports) >= 1, f"{context}: first flush", proc)
        time.sleep(rng.uniform(0, 0.03))  # the random kill point, not a wait for anything
        kill(proc)
        handed_over = max(chaos_processes.report_numbers(reports))

        report = recover(folder)

        assert_folder_at_rest(folder, context, report)
        delivered = drain(folder)
        assert all(item["src"] == trial for item in delivered), f"{context}: items of another trial"
        positions = sorted(item["i"] for item in delivered)
        # One batch is one transaction: what survives is every batch that was committed, i.e. a
        # prefix of what was put, without gaps or repeats, and at least all that was handed over.
        assert positions == list(range(len(positions))), (
            f"{context}: delivered positions are not a prefix without repeats "
            f"({len(positions)} items, {len(set(positions))} distinct, max {positions[-1] if positions else None})"
        )
        assert len(positions) >= handed_over, (
            f"{context}: {handed_over} items were handed over (flush() returned) but only "
            f"{len(positions)} were delivered"
        )
        assert os.listdir(folder) == []


# -- (d) consumers killed at random points -------------------------------------------------------

ACK_EVERY = 50
CHUNK = 100


def _consume_until_killed(folder: str, report_path: str, stop_after: int, ack_every: int) -> None:
    fd = chaos_processes.open_report(report_path)
    q = Dequeuer(folder, ack_every=ack_every, recover_every=3600)
    got = 0
    while True:
        try:
            item = q.get(timeout=1.0)
        except queue.Empty:
            continue
        report_line(fd, item["id"])
        got += 1
        if got == stop_after:  # "processing" this item (not acknowledged) when the kill comes
            time.sleep(3600)


def test_consumer_killed_at_random_points_loses_nothing(folder, tmp_path, procs, seed):
    rng = random.Random(seed)
    trials, per_trial = 30, 2000
    put_ids: List[int] = []
    received_all: List[int] = []
    too_many: List[str] = []
    for trial in range(trials):
        context = f"seed {seed}, trial {trial}"
        new = [make_item(trial, i) for i in range(per_trial)]
        with Enqueuer(folder, batch_size=10_000, chunk_size=CHUNK) as producer:
            producer.put_many(new)
        put_ids.extend(item["id"] for item in new)
        # What the folder keeps: ready_ files, and the chunks of an item that three consumers died
        # holding (in this test the kill can come at one item again and again), set aside in bad_.
        before = [item["id"] for item in chaos_folder.folder_items(folder) + chaos_folder.set_aside_items(folder)]
        assert len(before) == len(set(before)), f"{context}: an item is twice in the folder"

        reports = str(tmp_path / f"consumer{trial}.log")
        stop_after = rng.randint(1, len(before)) if rng.random() < 0.5 else 0
        proc = procs(_consume_until_killed, folder, reports, stop_after, ACK_EVERY)
        if stop_after:
            wait_for(lambda: chaos_processes.count_lines(reports) >= stop_after, f"{context}: {stop_after} items", proc)
        else:
            wait_for(lambda: chaos_processes.count_lines(reports) >= 1, f"{context}: first item", proc)
            time.sleep(rng.uniform(0, 0.01))  # the random kill point, not a wait for anything
        kill(proc)
        received = chaos_processes.report_numbers(reports)

        report = recover(folder)

        assert_folder_at_rest(folder, context, report)
        after = [item["id"] for item in chaos_folder.folder_items(folder) + chaos_folder.set_aside_items(folder)]
        assert len(received) == len(set(received)), f"{context}: the consumer got an item twice"
        assert len(after) == len(set(after)), f"{context}: an item is twice in the folder"
        assert set(received) <= set(before) and set(after) <= set(before), f"{context}: items from nowhere"
        lost = set(before) - set(received) - set(after)
        assert not lost, f"{context}: {len(lost)} items neither received nor left in the queue"
        if stop_after:
            assert received[-1] in set(after), f"{context}: the unacknowledged item in hand was not kept"
        again = len(set(received) & set(after))
        if again > ACK_EVERY + CHUNK:
            too_many.append(f"trial {trial}: {again} of {len(received)} received items will come again")
        received_all.extend(received)

    final = [item["id"] for item in drain(folder)]
    set_aside = [item["id"] for item in chaos_folder.set_aside_items(folder)]
    assert len(os.listdir(folder)) == len(listing(folder)["bad"]), "only set-aside files are left"
    assert len(final) == len(set(final)), f"seed {seed}: the last consumer got an item twice"
    assert set(received_all) | set(final) | set(set_aside) == set(put_ids), f"seed {seed}: items lost"
    assert not too_many, (
        f"seed {seed}: a crash re-delivered more than ack_every ({ACK_EVERY}) + one chunk ({CHUNK}) "
        f"items: " + "; ".join(too_many)
    )


@pytest.mark.parametrize("taken", [1, 800, 1000, 1100, 1101, 1599, 3199])
def test_consumer_crash_redelivers_at_most_ack_every_plus_one_chunk(folder, tmp_path, procs, taken):
    """The Dequeuer docstring: "a crash re-delivers at most [ack_every] items plus the chunk in hand".

    Defaults throughout (batch_size 10,000, chunk_size 100, ack_every 1000); the consumer is
    killed while it holds its ``taken``-th item.
    """
    ack_every, chunk = 1000, 100
    with Enqueuer(folder, batch_size=10_000, chunk_size=chunk) as producer:
        producer.put_many([make_item(0, i) for i in range(5000)])
    reports = str(tmp_path / "consumer.log")
    proc = procs(_consume_until_killed, folder, reports, taken, ack_every)
    wait_for(lambda: chaos_processes.count_lines(reports) >= taken, f"{taken} items", proc)
    kill(proc)
    received = chaos_processes.report_numbers(reports)
    assert received == [make_item(0, i)["id"] for i in range(taken)]

    report = recover(folder)

    assert_folder_at_rest(folder, f"taken={taken}", report)
    after = [item["i"] for item in chaos_folder.folder_items(folder)]
    assert after and after == list(range(after[0], 5000)), "nothing may be lost"
    redelivered = taken - after[0]
    assert redelivered >= 1, "the item in hand was not acknowledged: it must come again"
    assert redelivered <= ack_every + chunk, (
        f"killed holding item {taken}: the file's acknowledged position is {after[0]}, so {redelivered} "
        f"items come again, more than ack_every ({ack_every}) + one chunk ({chunk})"
    )
