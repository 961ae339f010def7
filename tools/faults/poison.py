"""Scenario 10: poison items, refused at put, set aside when they cannot be decoded, and set aside
after max_crashes when decoding one kills its consumer."""

from __future__ import annotations

import collections
import io
import json
import logging
import os
import pickle
import queue
import random
import sqlite3
import subprocess
import sys
import threading
import uuid
from typing import List, Set

from turbo_queue import Dequeuer, Enqueuer, recover

from .context import Context, scenario
from .folder import check_files, drain, groups, integrity, raw_meta
from .processes import DEADLINE, child, child_argv, forked, kill, open_report, report_numbers
from .tally import Result, record, tally


class RaisesWhenLoaded:
    """Pickles fine; unpickling it raises ValueError (its __reduce__ names a call that fails)."""

    def __reduce__(self):
        return (int, ("not a number",))


@child("poison_produce")
def child_poison_produce(p: dict) -> None:
    """Put good items mixed with poison: an instance of a class only this program has, and an
    object whose unpickling raises; also try items that cannot be pickled (refused at put)."""
    rng = random.Random(p["seed"])
    main = sys.modules["__main__"]
    name = "ProducerOnly_" + uuid.uuid4().hex  # exists in no consumer
    cls = type(name, (), {"__init__": lambda self, i: setattr(self, "i", i)})
    cls.__module__ = "__main__"
    setattr(main, name, cls)
    good: List[int] = []
    poison = refused = 0
    with Enqueuer(p["folder"], batch_size=rng.choice([100, 1000, 10_000]), chunk_size=rng.choice([1, 10, 100]),
                  max_batch_delay=3600) as producer:
        i = 0
        while i < p["count"]:
            roll = rng.random()
            if roll < 0.01:
                producer.put(cls(i) if rng.random() < 0.5 else RaisesWhenLoaded())
                poison += 1
            elif roll < 0.02:
                try:
                    if rng.random() < 0.5:
                        producer.put(lambda: None)
                    else:
                        producer.put_many([{"id": -1}, threading.Lock()])
                except TypeError:
                    refused += 1
                else:
                    raise AssertionError("an unpicklable item was accepted")
            elif roll < 0.2:
                n = rng.randint(2, 60)
                batch = [{"id": j} for j in range(i, i + n)]
                if rng.random() < 0.1:
                    batch.insert(rng.randrange(len(batch)), RaisesWhenLoaded())
                    poison += 1
                producer.put_many(batch)
                good += range(i, i + n)
                i += n
            else:
                producer.put({"id": i})
                good.append(i)
                i += 1
    print(json.dumps({"good": good, "poison": poison, "refused": refused}))


class _CountErrors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@scenario("poison", "10. poison items")
def scenario_poison(ctx: Context, result: Result) -> None:
    """10. Poison items: one that cannot be encoded is refused at put; one that cannot be decoded
    is reported and its chunk set aside in a bad_ file of its own, never delivered again, and the
    rest of its batch is delivered."""
    rng = ctx.rng
    for run in ctx.each_run(result, 30, 3, 100):
        folder = run.folder
        proc = subprocess.run(child_argv("poison_produce", folder=folder, seed=rng.randrange(2**32),
                                         count=ctx.pick(5000, 2000, 20_000)),
                              capture_output=True, text=True, timeout=DEADLINE)
        if proc.returncode != 0:
            run.fail(f"the producer failed: {proc.stderr[-600:]}")
            continue
        out = json.loads(proc.stdout.splitlines()[-1])
        errors = _CountErrors()
        logging.getLogger("turbo_queue").addHandler(errors)
        try:
            got = [item["id"] for item in drain(folder)]
            recover(folder)
            again = drain(folder)
        except Exception as exc:
            run.fail(f"the consumer raised {type(exc).__name__}: {exc}")
            continue
        finally:
            logging.getLogger("turbo_queue").removeHandler(errors)
        found = groups(folder)
        aside = 0
        for name in found["bad"]:
            meta = raw_meta(os.path.join(folder, name))
            if "set_aside_from" not in meta:
                run.fail(f"{name} is a whole batch set aside, not a chunk")
            aside += int(meta["count"])
            if integrity(os.path.join(folder, name)) != ["ok"]:
                result.integrity_failures += 1
        good = out["good"]
        counts = collections.Counter(got)
        result.bad_files += len(found["bad"])
        # the good items kept with the poison in its chunk are counted, not named: a poison item cannot be read
        lost = len(good) - len(set(got)) - (aside - out["poison"])
        record(result, f"{run.label} ({len(good)} good items put, {len(set(got))} delivered, "
               f"{aside - out['poison']} kept with the poison)", items=len(good) + out["poison"], lost=max(lost, 0),
               duplicated=sum(c - 1 for c in counts.values()) + len(again), unexpected=len(set(counts) - set(good)))
        if lost < 0:
            run.fail(f"{-lost} items more than put were delivered or set aside")
        if again:
            run.fail(f"{len(again)} items delivered again after recover()")
        if out["poison"] and not found["bad"]:
            run.fail(f"{out['poison']} poison items but no bad_ file")
        if len(errors.messages) < len(found["bad"]):
            run.fail(f"{len(found['bad'])} chunks set aside, {len(errors.messages)} errors logged")
        if found["ready"] or found["chosen"] or found["loading"]:
            run.fail(f"left: {found}")


class _ExitOnLoad:
    """An item whose unpickling ends the process at once, as a crash in C code or the OOM killer do."""

    def __reduce__(self):
        return os._exit, (137,)


class _Defused(pickle.Unpickler):
    """Unpickles what _ExitOnLoad made as the string "poison" instead of ending this process."""

    def find_class(self, module: str, name: str):
        if name == "_exit":
            return lambda code: "poison"
        return super().find_class(module, name)


def set_aside_ids(folder: str) -> Set[int]:
    """The ids of the dict items that consumers set aside in bad_ files, read without running
    the poison in them (pickle codec, as put_many writes a chunk: one pickled list)."""
    ids: Set[int] = set()
    for name in groups(folder)["bad"]:
        path = os.path.join(folder, name)
        meta = raw_meta(path)
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT data FROM items ORDER BY first").fetchall()
        finally:
            conn.close()
        items = [item for (data,) in rows for item in _Defused(io.BytesIO(data)).load()]
        ids |= {item["id"] for item in items[int(meta["acked"]):] if isinstance(item, dict)}
    return ids


def _consume_reporting(folder: str, report: str, seed: int) -> None:
    """Take everything with get or get_many, reporting each id once taken; exit 0 when empty."""
    rng = random.Random(seed)
    fd = open_report(report)
    consumer = Dequeuer(folder, recover_every=3600)
    while True:
        try:
            items = [consumer.get(timeout=0.3)] if rng.random() < 0.5 else consumer.get_many(rng.randint(1, 300), timeout=0.3)
        except queue.Empty:
            consumer.close()
            return
        os.write(fd, b"".join(b"%d\n" % item["id"] for item in items))


@scenario("poison_crash", "10. a poison item that kills its consumer")
def scenario_poison_crash(ctx: Context, result: Result) -> None:
    """10. A poison item that kills its consumer (at unpickling): consumers die at most
    max_crashes + 1 times on it, then its chunk is set aside and every other item delivered."""
    rng = ctx.rng
    limit = 3  # Dequeuer's default max_crashes
    deaths_seen: "collections.Counter[int]" = collections.Counter()
    for run in ctx.each_run(result, 20, 3, 60):
        folder = run.folder
        count = rng.choice([200, 2000, 9000])
        where = rng.randrange(count)
        chunk = rng.choice([1, 10, 100])
        items: List[object] = [{"id": i} for i in range(count)]
        items[where] = _ExitOnLoad()
        with Enqueuer(folder, batch_size=rng.choice([500, 10_000]), chunk_size=chunk, max_batch_delay=3600) as producer:
            producer.put_many(items)
        good = set(range(count)) - {where}
        report = run.report()
        deaths = 0
        while True:
            proc = forked(_consume_reporting, folder, report, rng.randrange(2**32))
            proc.join(DEADLINE)
            if proc.exitcode is None:
                kill(proc)
                run.fail("a consumer did not finish")
                break
            if proc.exitcode == 0:
                break
            deaths += 1
            recover(folder)
            if deaths > limit + 1:
                run.fail(f"consumers died {deaths} times on one poison item (max_crashes {limit})")
                break
        deaths_seen[deaths] += 1
        check_files(folder, result, run.label, allowed=("bad",))
        # the items delivered again since the last recorded position, at each crash: counted
        tally(result, run.label, good, report_numbers(report), kept=set_aside_ids(folder), items=count,
              duplicates_allowed=None)
        found = groups(folder)
        if len(found["bad"]) != 1 or found["ready"] or found["chosen"] or found["loading"]:
            run.fail(f"expected one bad_ file and nothing else, found {found}")
    result.notes.append("consumer deaths per poison item: "
                        + ", ".join(f"{d} in {n} runs" for d, n in sorted(deaths_seen.items())))
