"""Scenarios 3 and 4: recover() SIGKILLed in the middle of its work, and recover() in a tight loop
beside live producers and consumers."""

from __future__ import annotations

import collections
import json
import os
import queue
import random
import signal
import sqlite3
import time
from typing import Dict, List, Optional, Tuple

from turbo_queue import Dequeuer, Enqueuer, _folder, _batchfile, recover
from turbo_queue._codecs import get_codec

from .context import Context, Run, scenario
from .folder import batch_name, check_files, drain, folder_items, fresh_folder, remove_tree, set_meta, write_batch
from .processes import (DEADLINE, MP, KillPoints, child, child_argv, forked, kill, open_report, report_numbers,
                        run_killed_at, wait_for)
from .syscall_kills import killed_note
from .tally import Result, tally

RECOVERY_SYSCALLS = ("rename", "unlink", "pwrite64", "pread64", "openat", "fcntl", "flock", "close", "ftruncate")


def _hot_journal(folder: str, ids: List[int], ready) -> None:
    """Commit ``ids`` into a loading_ file, then start a transaction that spills pages and wait to be killed."""
    codec = get_codec("pickle")
    batch = _folder.create(folder)
    writer = _batchfile.BatchWriter(batch.path, codec)
    for start in range(0, len(ids), 100):
        writer.append(len(ids[start:start + 100]), codec.encode_many([{"id": i} for i in ids[start:start + 100]]))
    writer.finish()
    conn = sqlite3.connect(batch.path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=5")  # spill uncommitted pages into the file early
    conn.execute("BEGIN")
    for c in range(50):
        conn.execute("INSERT INTO items (first, n, crc, data) VALUES (?, ?, 0, ?)",
                     (10**6 + c * 100, 100, codec.encode_many([os.urandom(40) for _ in range(100)])))
    conn.execute("DELETE FROM items WHERE first < 200")
    conn.execute("UPDATE meta SET value = 1 WHERE key = 'count'")
    ready.set()
    time.sleep(3600)


def make_orphans(folder: str, rng: random.Random, hot: bool) -> Tuple[collections.Counter, Dict[str, int]]:
    """A folder as a crash of many processes leaves it; the items recovery must keep, and the
    number of files of each kind that must end as bad_ or stay as they are ("newer")."""
    expected: collections.Counter = collections.Counter()
    kinds = collections.Counter()
    next_id = 0

    def ids(count: int) -> List[int]:
        nonlocal next_id
        next_id += count
        return list(range(next_id - count, next_id))

    for _ in range(rng.randint(1, 3)):
        chunk = ids(rng.randint(1, 600))
        write_batch(folder, chunk, _folder.LOADING, chunk=rng.choice([1, 10, 100]))
        expected.update(chunk)
    for _ in range(rng.randint(1, 3)):
        chunk = ids(rng.randint(1, 600))
        acked = rng.randint(0, len(chunk))
        name = write_batch(folder, chunk, _folder.CHOSEN, acked=acked, chunk=rng.choice([1, 10, 100]))
        expected.update(chunk[acked:])
        if rng.random() < 0.3:  # killed as SQLite created its journal, before writing to it
            os.close(os.open(os.path.join(folder, name + "-journal"), os.O_CREAT | os.O_WRONLY, 0o644))
    chunk = ids(rng.randint(1, 300))
    write_batch(folder, chunk, _folder.READY)
    expected.update(chunk)
    if rng.random() < 0.5:
        os.close(os.open(os.path.join(folder, batch_name("loading")), os.O_CREAT | os.O_WRONLY, 0o644))
    if rng.random() < 0.5:
        with open(os.path.join(folder, batch_name("chosen")), "wb") as f:
            f.write(os.urandom(rng.randint(100, 9000)))
        kinds["bad"] += 1
    if rng.random() < 0.3:
        name = write_batch(folder, ids(20), _folder.LOADING)
        set_meta(os.path.join(folder, name), "format", _batchfile.FORMAT_VERSION + 1)
        kinds["newer"] += 1
    if rng.random() < 0.5:
        hidden = _folder.CREATING + batch_name("loading")[len("loading_"):]
        os.close(os.open(os.path.join(folder, hidden), os.O_CREAT | os.O_WRONLY, 0o644))
    if hot:
        chunk = ids(1000)
        ready = MP.Event()
        proc = forked(_hot_journal, folder, chunk, ready)
        try:
            wait_for(ready.is_set, "a transaction in the file", proc)
        finally:
            kill(proc)
        expected.update(chunk)
    return expected, kinds


def check_recovered(run: Run, expected: "collections.Counter[int]", kinds: Dict[str, int]) -> None:
    """recover() once more: every item of ``expected`` is in a ready_ file once, the planted
    corrupt files are bad_, the files of a newer format left as they are, no batch has two names."""
    report = recover(run.folder)
    found = check_files(run.folder, run.result, run.label, allowed=("ready", "bad", "loading"))
    if len(found["loading"]) != kinds.get("newer", 0):
        run.fail(f"loading_ files left: {found['loading']} (report {report})")
    if len(found["bad"]) != kinds.get("bad", 0):
        run.fail(f"{len(found['bad'])} bad_ files, expected {kinds.get('bad', 0)}")
    uids = collections.Counter(_folder.parse_name(n).uid for k in ("loading", "ready", "chosen", "bad") for n in found[k])
    twice = [uid for uid, c in uids.items() if c > 1]
    if twice:
        run.fail(f"batches with two names: {twice[:3]}")
    tally(run.result, run.label, expected, [item["id"] for item in folder_items(run.folder, found["ready"])])


@child("recover")
def child_recover(p: dict) -> None:
    recover(p["folder"], durable=p.get("durable", False))


def _recover_in_child(folder: str) -> None:
    recover(folder)


@scenario("recovery_kill", "3. recover() SIGKILL mid-work")
def scenario_recovery_kill(ctx: Context, result: Result) -> None:
    """3. SIGKILL recover() in the middle of its work (at a system call, or at a random moment),
    then recover again: nothing lost, nothing twice, no batch with two names."""
    rng = ctx.rng
    points: Optional[KillPoints] = None
    killed: "collections.Counter[str]" = collections.Counter()
    for run in ctx.each_run(result, 150, 30, 500):
        expected, kinds = make_orphans(run.folder, rng, hot=rng.random() < 0.4)
        run.watch()  # from here on: the orphans were made before
        if rng.random() < 0.7:
            durable = rng.random() < 0.3
            if points is None:
                sample = fresh_folder(ctx.root)
                make_orphans(sample, random.Random(1), hot=True)
                points = KillPoints(child_argv("recover", folder=sample, durable=True), RECOVERY_SYSCALLS + ("fsync",))
                remove_tree(sample)
            syscall, n = points.pick(rng)
            run.label += f" (kill at {syscall} #{n}, durable={durable})"
            proc = run_killed_at(child_argv("recover", folder=run.folder, durable=durable), syscall, n)
            if proc.returncode == -signal.SIGKILL:
                killed[syscall] += 1
            elif proc.returncode != 0:
                run.fail(f"recover() failed ({proc.returncode}): {proc.stderr[-500:]}")
        else:
            run.label += " (kill at a random moment)"
            proc = forked(_recover_in_child, run.folder)
            time.sleep(rng.uniform(0, 0.01))
            if kill(proc):
                killed["random moment"] += 1
        check_recovered(run, expected, kinds)
    result.notes.append(killed_note(killed, result.runs))


def _pipeline_producer(folder: str, source: int, count: int, seed: int) -> None:
    rng = random.Random(seed)
    with Enqueuer(folder, batch_size=150, chunk_size=20, max_batch_delay=0.005) as producer:
        i = 0
        while i < count:
            if rng.random() < 0.1:
                n = min(rng.randint(2, 70), count - i)
                producer.put_many([{"id": source * 10**7 + j} for j in range(i, i + n)])
                i += n
            else:
                producer.put({"id": source * 10**7 + i})
                i += 1
            if rng.random() < 0.002:
                producer.flush()


def _pipeline_consumer(folder: str, done, out: str, seed: int) -> None:
    rng = random.Random(seed)
    fd = open_report(out)
    with Dequeuer(folder, ack_every=rng.choice([7, 50, 1000]), recover_every=3600) as consumer:
        while True:
            finished = done.is_set()  # read before looking: an Empty after this saw everything
            try:
                items = consumer.get_many(rng.randint(1, 120), timeout=0.05)
            except queue.Empty:
                if finished:
                    break
                continue
            os.write(fd, b"".join(b"%d\n" % item["id"] for item in items))


def _recover_loop(folder: str, started, stop, out: str) -> None:
    passes = with_live = 0
    taken: List[str] = []
    while not stop.is_set():
        passes += 1
        started.set()
        if passes % 3 == 0:
            recover(folder, dry_run=True)  # it probes locks too, and must disturb no one either
            continue
        report = recover(folder)
        with_live += bool(report.live)
        taken += report.requeued + report.quarantined + report.refused
        # a producer's hidden file taken between its open and its lock holds nothing; the producer retries
        taken += [n for n in report.removed if not n.startswith(_folder.CREATING)]
    with open(out, "w") as f:
        json.dump({"passes": passes, "with_live": with_live, "taken": taken}, f)


@scenario("recover_loop", "4. recover() looping beside live processes")
def scenario_recover_loop(ctx: Context, result: Result) -> None:
    """4. recover() (and every third pass recover(dry_run=True)) in a tight loop beside 3 producers
    and 3 consumers: it never takes a live file, and every item comes exactly once. Every other
    run has no recover() loop, and there the consumers themselves must get every item."""
    rng = ctx.rng
    producers, consumers = 3, 3
    per_producer = ctx.pick(30_000, 5000, 100_000)
    passes = with_live = 0
    for run in ctx.each_run(result, 4, 2, 10, witness=True):
        looping = run.number % 2 == 0
        run.label += "" if looping else " (no recover() loop)"
        done, started, stop = MP.Event(), MP.Event(), MP.Event()
        loop_out = run.report("loop.json")
        outs = [run.report(f"consumer{c}.log") for c in range(consumers)]
        looper = None
        if looping:
            looper = forked(_recover_loop, run.folder, started, stop, loop_out)
            wait_for(started.is_set, "the first recover() pass", looper)
        cons = [forked(_pipeline_consumer, run.folder, done, out, rng.randrange(2**32)) for out in outs]
        prods = [forked(_pipeline_producer, run.folder, p, per_producer, rng.randrange(2**32)) for p in range(producers)]
        for proc in prods:
            proc.join(DEADLINE * 3)
            if proc.exitcode != 0:
                run.fail(f"a producer exited {proc.exitcode}")
        done.set()
        for proc in cons:
            proc.join(DEADLINE)
            if proc.exitcode != 0:
                run.fail(f"a consumer exited {proc.exitcode}")
        received = [i for out in outs for i in report_numbers(out)]
        if looper is not None:
            stop.set()
            looper.join(DEADLINE)
            try:
                with open(loop_out) as f:
                    stats = json.load(f)
            except FileNotFoundError:
                run.fail(f"the recover() loop crashed (exit code {looper.exitcode})")
                stats = {"passes": 0, "with_live": 0, "taken": []}
            passes += stats["passes"]
            with_live += stats["with_live"]
            if stats["taken"]:
                run.fail(f"recover() took files of live processes: {stats['taken'][:5]}")
            # a consumer that found the last ready_ file locked for an instant by recover()'s probe moves
            # on (losing a claim is normal), so a batch may be left for the next consumer
            received += [item["id"] for item in drain(run.folder)]
        run.close_witness()
        expected = {p * 10**7 + i for p in range(producers) for i in range(per_producer)}
        tally(result, run.label, expected, received)
        if os.listdir(run.folder):
            run.fail(f"left in the folder: {os.listdir(run.folder)[:4]}")
    result.notes.append(f"{passes} recover() passes (every third a dry run), {with_live} of them while files were held")
    if with_live == 0:
        result.fail("recover() never ran while a file was held: the check proved nothing")
