"""Scenario 12: the soak. Two producers and two consumers run for minutes while a random one of
them is SIGKILLed every few seconds and started again."""

from __future__ import annotations

import collections
import os
import queue
import random
import time
from typing import Dict, List

from turbo_queue import Dequeuer, Enqueuer, recover

from .context import Context, scenario
from .folder import check_files, drain, fresh_folder, remove_tree
from .processes import DEADLINE, forked, kill, open_report
from .tally import Result, record
from .witness import Witness


SOAK_GENERATION = 10**10  # item id = generation * SOAK_GENERATION + position in that producer's life


def _soak_producer(folder: str, report: str, base: int, seed: int, rate: float, stop: str) -> None:
    """Put ``rate`` items a second (ids base, base+1, ...) until ``stop`` exists, reporting each flush.

    The soak's flags are files, not multiprocessing Events: a process SIGKILLed inside an Event's
    lock or wait leaves it locked for everyone.
    """
    rng = random.Random(seed)
    fd = open_report(report)
    producer = Enqueuer(folder, batch_size=rng.choice([1000, 10_000]), chunk_size=100,
                        max_batch_delay=rng.choice([0.01, 0.05]), durable=rng.random() < 0.1)
    i, next_flush = 0, rng.randint(1000, 20_000)
    started = time.monotonic()
    while not os.path.exists(stop):
        n = rng.choice((1, 100, 1000))
        if n == 1:
            producer.put(base + i)
        else:
            producer.put_many(list(range(base + i, base + i + n)))
        i += n
        if i >= next_flush:
            producer.flush()
            os.write(fd, b"%d\n" % i)  # items base .. base+i-1 were handed over
            next_flush = i + rng.randint(1000, 20_000)
        ahead = i / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(min(ahead, 0.05))
    producer.close()
    os.write(fd, b"%d\n" % i)


def _soak_consumer(folder: str, report: str, seed: int, done: str) -> None:
    rng = random.Random(seed)
    fd = open_report(report)
    with Dequeuer(folder, ack_every=rng.choice([100, 1000]), recover_every=1.0) as consumer:
        while True:
            finished = os.path.exists(done)  # read before looking: an Empty after this saw everything
            try:
                items = consumer.get_many(rng.choice((1, 100, 1000)), timeout=0.2)
            except queue.Empty:
                if finished:
                    return
                continue
            os.write(fd, b"".join(b"%d\n" % item for item in items))


def _last_number(path: str) -> int:
    """The last complete line of a producer's report (its file only grows)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 64))
            lines = f.read().split(b"\n")[:-1]
    except FileNotFoundError:
        return 0
    return int(lines[-1]) if lines else 0


class DeliveryCounts:
    """How often each item id was delivered, in a byte per item (a million items, a megabyte)."""

    def __init__(self, sizes: Dict[int, int]) -> None:
        self.counts = {generation: bytearray(size) for generation, size in sizes.items()}
        self.unknown = 0

    def add(self, item: int) -> None:
        generation, position = divmod(item, SOAK_GENERATION)
        counts = self.counts.get(generation)
        if counts is None:
            self.unknown += 1
        elif position >= len(counts):
            # put but not reported as handed over (a producer killed before its next flush): extend
            counts.extend(bytes(position + 1 - len(counts)))
            counts[position] = min(counts[position] + 1, 255)
        else:
            counts[position] = min(counts[position] + 1, 255)


@scenario("soak", "12. soak with random kills")
def scenario_soak(ctx: Context, result: Result) -> None:
    """12. Two producers and two consumers run while a random one of them is SIGKILLed every few
    seconds and started again, until the target number of items was handed over: nothing lost."""
    rng = ctx.rng
    target = ctx.soak_items or ctx.pick(1_000_000, 150_000, 10_000_000)
    seconds = ctx.pick(60.0, 12.0, 600.0)
    rate = target / seconds / 2  # per producer: the kills come every few seconds of a long run
    low, high = ctx.soak_kill_every or ctx.pick((0.5, 2.5), (0.2, 0.6), (1.0, 5.0))
    folder = fresh_folder(ctx.root)
    stop, done = os.path.join(ctx.root, "soak-stop"), os.path.join(ctx.root, "soak-done")
    producers: Dict[int, object] = {}
    consumers: Dict[int, object] = {}
    reports: Dict[int, str] = {}  # generation -> report of that producer's life
    consumer_reports: List[str] = []
    kills = collections.Counter()

    def start_producer(slot: int) -> None:
        generation = len(reports) + 1
        reports[generation] = os.path.join(ctx.root, f"soak-p{generation}.log")
        producers[slot] = forked(_soak_producer, folder, reports[generation], generation * SOAK_GENERATION,
                                 rng.randrange(2**32), rate, stop)

    def start_consumer(slot: int) -> None:
        consumer_reports.append(os.path.join(ctx.root, f"soak-c{len(consumer_reports)}.log"))
        consumers[slot] = forked(_soak_consumer, folder, consumer_reports[-1], rng.randrange(2**32), done)

    witness = Witness(folder)
    for slot in range(2):
        start_producer(slot)
        start_consumer(slot)
    started = time.monotonic()
    next_kill = started + rng.uniform(low, high)
    limit = started + seconds * 3 + 60
    handed = 0
    while handed < target:
        time.sleep(0.05)
        now = time.monotonic()
        if now > limit:
            result.fail(f"only {handed} of {target} items handed over in {now - started:.0f}s")
            break
        for role, procs, start in (("producer", producers, start_producer), ("consumer", consumers, start_consumer)):
            for slot, proc in list(procs.items()):
                if not proc.is_alive():
                    result.fail(f"a {role} exited by itself ({proc.exitcode})")
                    start(slot)
        if now >= next_kill:
            role, slot = rng.choice([("producer", 0), ("producer", 1), ("consumer", 0), ("consumer", 1)])
            if kill((producers if role == "producer" else consumers)[slot]):
                kills[role] += 1
            (start_producer if role == "producer" else start_consumer)(slot)
            next_kill = now + rng.uniform(low, high)
        handed = sum(_last_number(report) for report in reports.values())
    elapsed = time.monotonic() - started
    open(stop, "w").close()
    for proc in producers.values():
        proc.join(DEADLINE)
        if proc.exitcode != 0:
            result.fail(f"a producer did not close normally ({proc.exitcode})")
    open(done, "w").close()
    for proc in consumers.values():
        proc.join(DEADLINE * 2)
        if proc.exitcode != 0:
            result.fail(f"a consumer did not finish normally ({proc.exitcode})")
    recover(folder)
    leftovers = drain(folder)
    for violation in witness.close():
        result.fail(violation)
    check_files(folder, result, "soak", allowed=())
    handed_over = {generation: _last_number(report) for generation, report in reports.items()}
    delivered = DeliveryCounts(handed_over)
    deliveries = len(leftovers)
    for item in leftovers:
        delivered.add(item)
    for report in consumer_reports:
        with open(report, "rb") as f:
            for line in f.read().split(b"\n")[:-1]:
                delivered.add(int(line))
                deliveries += 1
    lost = sum(counts[:handed_over[generation]].count(0) for generation, counts in delivered.counts.items())
    duplicated = sum(sum(c - 1 for c in counts if c > 1) for counts in delivered.counts.values())
    bound = kills["consumer"] * (1000 + 100 + 1000)  # per consumer crash: ack_every + chunk + a get_many
    result.runs = 1
    record(result, f"soak ({kills['consumer']} consumer kills)", items=sum(handed_over.values()), lost=lost,
           duplicated=duplicated, unexpected=delivered.unknown, duplicates_allowed=bound)
    if kills["producer"] + kills["consumer"] == 0:
        result.fail("nothing was killed: the soak proved nothing")
    result.notes.append(f"{deliveries:,} deliveries in {elapsed:.0f} s; {kills['producer']} producer and "
                        f"{kills['consumer']} consumer kills (one every {low}-{high} s); duplicates "
                        f"{duplicated:,} (bound {bound:,})")
    remove_tree(folder)
    for path in list(reports.values()) + consumer_reports + [stop, done]:
        os.unlink(path)
