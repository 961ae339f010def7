"""Scenarios 1 and 2: a producer or a consumer SIGKILLed at a random moment."""

from __future__ import annotations

import os
import queue
import random
import time
from typing import List, Optional

from turbo_queue import Dequeuer, Enqueuer, recover

from .context import Context, Run, scenario
from .folder import check_files, drain, folder_items
from .processes import count_lines, forked, kill, open_report, report_numbers, wait_for
from .tally import Result, tally


def _produce_forever(folder: str, report: str, seed: int) -> None:
    """A producer with random settings, the timer included, reporting what each flush handed over."""
    rng = random.Random(seed)
    fd = open_report(report)
    flush_every = rng.choice([1, 7, 50, 120, 400])
    queue_ = Enqueuer(folder, batch_size=rng.choice([30, 100, 1000]), chunk_size=rng.choice([1, 10, 40]),
                      max_batch_delay=rng.choice([0.001, 0.01, 5.0]), codec=rng.choice(["pickle", "json"]),
                      durable=rng.random() < 0.2)
    i, next_flush = 0, flush_every
    while True:
        if rng.random() < 0.2:
            n = rng.randint(2, 30)
            queue_.put_many([{"i": j} for j in range(i, i + n)])
            i += n
        else:
            queue_.put({"i": i})
            i += 1
        if i >= next_flush:
            queue_.flush()
            os.write(fd, b"%d\n" % i)  # items 0 .. i-1 were handed over
            next_flush = i + flush_every


@scenario("producer_kill", "1. producer SIGKILL, random moment")
def scenario_producer_random_kill(ctx: Context, result: Result) -> None:
    """1. SIGKILL a producer at a random moment (its timer rolls too): nothing handed over is lost."""
    rng = ctx.rng
    for run in ctx.each_run(result, 300, 30, 1000, witness=True):
        report = run.report()
        proc = forked(_produce_forever, run.folder, report, rng.randrange(2**32))
        try:
            wait_for(lambda: count_lines(report) >= 1, f"{run.label}: first flush", proc)
            time.sleep(rng.uniform(0, 0.03))  # the random kill point, not a wait for anything
        finally:
            kill(proc)
        handed_over = max(report_numbers(report))
        recover(run.folder)
        run.close_witness()
        check_files(run.folder, result, run.label)
        positions = sorted(item["i"] for item in drain(run.folder))
        # One batch is one transaction: what survives is every batch that was committed, a prefix of
        # what was put without gaps or repeats, and at least all that was handed over.
        if positions != list(range(len(positions))):
            run.fail("delivered items are not a prefix of what was put, without repeats")
        tally(result, run.label, range(handed_over), positions, possible=positions, items=len(positions))
        if os.listdir(run.folder):
            run.fail(f"left after draining: {os.listdir(run.folder)[:4]}")


def fill(folder: str, rng: random.Random, count: int, start: int = 0, *, batch_size: Optional[int] = None,
         chunk: Optional[int] = None) -> List[int]:
    """Put ``count`` items with ids start.. in a few batches (of random shape, unless given); their ids."""
    ids = list(range(start, start + count))
    batch_size = batch_size or rng.choice([50, 400, 10_000])
    with Enqueuer(folder, batch_size=batch_size, chunk_size=chunk or rng.choice([1, 10, 100]),
                  max_batch_delay=3600) as producer:
        producer.put_many([{"id": i, "pad": "y" * 30} for i in ids])
    return ids


def check_consumer_run(run: Run, before: List[int], received: List[int], bound: int, killed: bool) -> List[int]:
    """After a consumer of the items ``before`` got ``received`` and stopped (killed or not):
    recover(), then every item was received or is still in the folder, none twice in either, and
    no more than ``bound`` received ones come again (none if it was not killed). The ids left."""
    recover(run.folder)
    check_files(run.folder, run.result, run.label)
    after = [item["id"] for item in folder_items(run.folder)]
    twice_received = len(received) - len(set(received))
    twice_after = len(after) - len(set(after))
    if twice_received or twice_after:
        run.fail(f"{twice_received} items got twice by one consumer, {twice_after} twice in the folder")
    tally(run.result, run.label, before, received + after, duplicates_allowed=bound if killed else 0)
    rest = [item["id"] for item in drain(run.folder)]
    if sorted(rest) != sorted(after) or os.listdir(run.folder):
        run.fail(f"draining the rest gave {len(rest)} items, expected {len(after)}")
    return after


def _consume_until_killed(folder: str, report: str, seed: int, ack_every: int, max_call: int,
                          stop_after: int = 0) -> None:
    """Take items and report each, until killed; with ``stop_after``, one at a time, and after the
    ``stop_after``-th item wait with it in hand (taken, not acknowledged) for the kill."""
    rng = random.Random(seed)
    fd = open_report(report)
    consumer = Dequeuer(folder, ack_every=ack_every, recover_every=3600)
    got = 0
    while True:
        try:
            if stop_after or rng.random() < 0.5:
                items = [consumer.get(timeout=1.0)]
            else:
                items = consumer.get_many(rng.randint(1, max_call), timeout=1.0)
        except queue.Empty:
            continue
        os.write(fd, b"".join(b"%d\n" % item["id"] for item in items))
        got += len(items)
        if got == stop_after:  # "processing" this item when the kill comes
            time.sleep(3600)


#: Kill points at a chosen item, with the defaults (one batch of 5,000, chunks of 100, ack_every
#: 1,000): at the first item, around a recorded position and around chunk boundaries.
TAKEN = (1, 800, 1000, 1100, 1101, 1599, 3199)


@scenario("consumer_kill", "2. consumer SIGKILL, random moment")
def scenario_consumer_random_kill(ctx: Context, result: Result) -> None:
    """2. SIGKILL a consumer at a random moment, or while it holds a chosen item: nothing lost,
    duplicates within the bound, and the item in hand (not acknowledged) is kept to come again."""
    rng = ctx.rng
    chosen_runs = 0
    for run in ctx.each_run(result, 300, 30, 1000):
        report = run.report()
        chunk = 100  # fill() uses at most 100 items per chunk
        if run.number % 2 == 0:
            before = fill(run.folder, rng, rng.choice([300, 2000, 5000]))
            ack_every, max_call = rng.choice([1, 10, 50, 1000]), rng.choice([1, 50, 300])
            run.label += f" (ack_every={ack_every}, max_call={max_call})"
            proc = forked(_consume_until_killed, run.folder, report, rng.randrange(2**32), ack_every, max_call)
            try:
                wait_for(lambda: count_lines(report) >= 1, f"{run.label}: first item", proc)
                time.sleep(rng.uniform(0, 0.02))  # the random kill point
            finally:
                kill(proc)
            check_consumer_run(run, before, report_numbers(report), ack_every + chunk + max_call, killed=True)
            continue
        # killed while it holds its taken-th item: a crash re-delivers at most ack_every items plus the
        # chunk in hand (the Dequeuer's docstring), and never fewer than the item in hand
        if chosen_runs < len(TAKEN):
            taken, ack_every, one_batch = TAKEN[chosen_runs], 1000, True
            before = fill(run.folder, rng, 5000, batch_size=10_000, chunk=chunk)
        else:
            ack_every, one_batch = rng.choice([1, 10, 50, 1000]), False
            before = fill(run.folder, rng, rng.choice([300, 2000, 5000]))
            taken = rng.randint(1, len(before))
        chosen_runs += 1
        run.label += f" (killed holding item {taken}, ack_every={ack_every})"
        proc = forked(_consume_until_killed, run.folder, report, rng.randrange(2**32), ack_every, 1, taken)
        try:
            wait_for(lambda: count_lines(report) >= taken, f"{run.label}: {taken} items", proc)
        finally:
            if not kill(proc):
                run.fail(f"the consumer exited ({proc.exitcode}) before it was killed")
        received = report_numbers(report)
        if one_batch and received != before[:taken]:
            run.fail(f"the consumer got {len(received)} items, not the first {taken} in order")
        after = check_consumer_run(run, before, received, ack_every + chunk, killed=True)
        if received and received[-1] not in set(after):
            run.fail("the item in hand was not acknowledged, yet it was not kept: it must come again")
    result.notes.append(f"{chosen_runs} of {result.runs} runs killed the consumer while it held a chosen item")
