"""Scenarios 1, 2 and 5 at a system call: strace kills a producer or a consumer (SIGKILL) on
entering its N-th call of a chosen system call, inside a commit, a roll, a claim or a rename."""

from __future__ import annotations

import collections
import os
import queue
import random
import signal
import sqlite3
from typing import Dict

from turbo_queue import BatchWriteError, Dequeuer, Enqueuer, recover

from .context import Context, Run, scenario
from .folder import check_files, drain, read_batch, remove_tree, fresh_folder
from .kills import check_consumer_run, fill
from .processes import KillPoints, child, child_argv, open_report, report_lines, run_killed_at, write_report
from .tally import Result, record

PRODUCER_SYSCALLS = ("pwrite64", "rename", "unlink", "openat", "fcntl", "flock", "close", "ftruncate")
DURABLE_SYSCALLS = PRODUCER_SYSCALLS + ("fsync", "fdatasync")
IN_TRANSACTION_SYSCALLS = ("pwrite64", "unlink", "openat", "fcntl", "ftruncate")
CONSUMER_SYSCALLS = ("pwrite64", "rename", "unlink", "openat", "fcntl", "flock", "close")


def plan_item(segment: int, i: int, pad: int) -> dict:
    return {"s": segment, "i": i, "p": "x" * pad}


@child("produce")
def child_produce(p: dict) -> None:
    """Put the planned segments; each ends with a roll (flush, or the size limit); report each.

    A BatchWriteError (injected ENOSPC/EIO) abandons the rest of its segment, is reported, and
    the producer goes on with the next segment, as a program would once the cause is gone.
    """
    rng = random.Random(p["seed"])
    fd = open_report(p["report"])
    queue_ = Enqueuer(p["folder"], batch_size=p["batch_size"], max_batch_delay=3600, chunk_size=p["chunk"],
                      codec=p["codec"], durable=p["durable"])
    for k, size in enumerate(p["segments"]):
        try:
            i = 0
            while i < size:
                if rng.random() < 0.3:
                    n = min(size - i, rng.randint(2, 40))
                    queue_.put_many([plan_item(k, j, p["pad"]) for j in range(i, i + n)])
                    i += n
                else:
                    queue_.put(plan_item(k, i, p["pad"]))
                    i += 1
            if p["batch_size"] > size:
                queue_.flush()
            write_report(fd, b"ok %d\n" % k)
        except BatchWriteError as exc:
            write_report(fd, b"failed %d %d\n" % (k, exc.items))
            if queue_.pending:  # the rest of a segment whose first part failed: never handed over
                raise AssertionError(f"{queue_.pending} items pending after a BatchWriteError") from exc
    queue_.close()
    write_report(fd, b"closed\n")


@child("consume")
def child_consume(p: dict) -> None:
    """Take everything, with get and get_many, handing back now and then; report every item got."""
    rng = random.Random(p["seed"])
    fd = open_report(p["report"])
    settings = dict(ack_every=p["ack_every"], durable=p["durable"], recover_every=3600)
    consumer = Dequeuer(p["folder"], **settings)
    while True:
        try:
            if rng.random() < 0.5:
                items = [consumer.get(timeout=0.3)]
            else:
                items = consumer.get_many(rng.randint(1, p["max_call"]), timeout=0.3)
        except queue.Empty:
            break
        os.write(fd, b"".join(b"%d\n" % item["id"] for item in items))
        if p["reopen"] and rng.random() < p["reopen"]:
            consumer.close()  # hands the rest of the batch back (protocol step 7)
            consumer = Dequeuer(p["folder"], **settings)
    consumer.close()
    os.write(fd, b"done\n")


def make_plan(rng: random.Random, big: bool) -> dict:
    """What a producer of :func:`child_produce` puts: segments of items, each rolled as one batch."""
    size_mode = rng.random() < 0.4
    if big:  # a batch larger than SQLite's page cache (2 MB): pages spill into the file before the commit
        segments = [rng.randint(700, 1100) for _ in range(3)]
        pad = 3000
    else:
        segments = [rng.randint(1, 250) for _ in range(8)]
        pad = rng.choice([10, 200])
    if size_mode:  # every batch rolls when it reaches batch_size, inside a put
        segments = [segments[0]] * len(segments)
    return {"segments": segments, "pad": pad, "batch_size": segments[0] if size_mode else 10**6,
            "chunk": rng.choice([1, 7, 50, 100]), "codec": rng.choice(["pickle", "json"]), "durable": False}


def check_plan(run: Run, plan: dict, report: str) -> None:
    """After a producer of ``plan`` stopped (killed or not) and recover(): every batch file holds
    exactly one whole segment (never part of one), every segment whose roll returned is there,
    a failed segment is nowhere, and the segments there are the first ones put."""
    lines = report_lines(report)
    handed_over = {int(line.split()[1]) for line in lines if line.startswith(b"ok ")}
    failed = {int(line.split()[1]) for line in lines if line.startswith(b"failed ")}
    found = check_files(run.folder, run.result, run.label)
    present: Dict[int, str] = {}
    items = duplicated = unexpected = 0
    for name in found["ready"]:
        try:
            _, batch = read_batch(os.path.join(run.folder, name))
        except (sqlite3.Error, ValueError) as exc:
            run.fail(f"{name} cannot be read: {exc}")
            continue
        segments = {item["s"] for item in batch}
        items += len(batch)
        if len(segments) != 1:
            run.fail(f"{name} holds items of segments {sorted(segments)[:5]}")
            continue
        (k,) = segments
        if not 0 <= k < len(plan["segments"]):
            unexpected += len(batch)
            continue
        if [item["i"] for item in batch] != list(range(plan["segments"][k])):
            run.fail(f"{name} holds {len(batch)} items of segment {k}, which has {plan['segments'][k]}: "
                     f"part of a batch was handed over")
        if k in present:
            duplicated += len(batch)
            run.fail(f"segment {k} is in {present[k]} and {name}")
        if k in failed:
            run.fail(f"segment {k} failed (BatchWriteError) but was handed over in {name}")
        present[k] = name
    missing = sorted(handed_over - set(present))
    record(run.result, run.label, items=items, lost=sum(plan["segments"][k] for k in missing), duplicated=duplicated,
           unexpected=unexpected, examples=[f"segment {k}" for k in missing])
    expected_prefix = [k for k in range(len(plan["segments"])) if k not in failed][:len(present)]
    if sorted(present) != expected_prefix:
        run.fail(f"segments {sorted(present)} are there, not the first ones put")
    got = drain(run.folder)
    if len(got) != sum(plan["segments"][k] for k in present):
        run.fail(f"a consumer got {len(got)} items from these files")
    if os.listdir(run.folder):
        run.fail(f"left after draining: {os.listdir(run.folder)[:4]}")


def kill_points(ctx: Context, role: str, params: dict, syscalls, prepare=None) -> KillPoints:
    """Where the work of a child ``role`` with ``params`` starts and ends, per system call, measured
    on a sample folder (``prepare`` fills it first)."""
    sample = fresh_folder(ctx.root)
    try:
        if prepare is not None:
            prepare(sample)
        return KillPoints(child_argv(role, **dict(params, folder=sample, report=os.devnull)), syscalls)
    finally:
        remove_tree(sample)


def killed_note(killed: "collections.Counter[str]", runs: int) -> str:
    return (f"killed in {sum(killed.values())} of {runs} runs (the others ran to the end), at: "
            + ", ".join(f"{s} {c}" for s, c in sorted(killed.items())))


@scenario("producer_syscall_kill", "1. producer SIGKILL at a syscall (commit, roll, rename)")
def scenario_producer_syscall_kill(ctx: Context, result: Result, big: bool = False) -> None:
    """1. SIGKILL a producer on entering its N-th call of a system call: inside a commit (pwrite64,
    unlink of the journal, fcntl locks), a roll and a rename. 5 (``big``): batches larger than the
    page cache, so a kill inside the transaction finds uncommitted pages in the file."""
    rng = ctx.rng
    syscalls = IN_TRANSACTION_SYSCALLS if big else PRODUCER_SYSCALLS
    points: Dict[bool, KillPoints] = {}
    killed: "collections.Counter[str]" = collections.Counter()
    runs = (80, 10, 300) if big else (150, 30, 500)
    for run in ctx.each_run(result, *runs, witness=True):
        report = run.report()
        plan = make_plan(rng, big)
        plan["durable"] = durable = (not big) and rng.random() < 0.3
        params = dict(plan, folder=run.folder, report=report, seed=rng.randrange(2**32))
        if durable not in points:  # where the work starts and ends, for one representative plan
            points[durable] = kill_points(ctx, "produce", params, DURABLE_SYSCALLS if durable else syscalls)
        syscall, n = points[durable].pick(rng)
        run.label += f" (kill at {syscall} #{n}, durable={durable})"
        proc = run_killed_at(child_argv("produce", **params), syscall, n)
        if proc.returncode == -signal.SIGKILL:
            killed[syscall] += 1
        elif proc.returncode != 0:
            run.fail(f"the producer failed ({proc.returncode}): {proc.stderr[-500:]}")
        recover(run.folder)
        run.close_witness()
        check_plan(run, plan, report)
    result.notes.append(killed_note(killed, result.runs))


@scenario("transaction_kill", "5. producer SIGKILL inside a spilled transaction")
def scenario_transaction_kill(ctx: Context, result: Result) -> None:
    """5. SIGKILL a producer inside a transaction that spilled pages into its file."""
    scenario_producer_syscall_kill(ctx, result, big=True)


@scenario("consumer_syscall_kill", "2. consumer SIGKILL at a syscall (claim, ack, hand-back, delete)")
def scenario_consumer_syscall_kill(ctx: Context, result: Result) -> None:
    """2. SIGKILL a consumer on entering its N-th call of a system call: inside a claim (flock,
    rename), a position write (pwrite64, fcntl), a hand-back (rename) or a delete (unlink)."""
    rng = ctx.rng
    points: Dict[bool, KillPoints] = {}
    killed: "collections.Counter[str]" = collections.Counter()
    for run in ctx.each_run(result, 150, 30, 500, witness=True):
        report = run.report()
        before = fill(run.folder, rng, rng.choice([300, 2000]))
        durable = rng.random() < 0.3
        params = dict(folder=run.folder, report=report, seed=rng.randrange(2**32),
                      ack_every=rng.choice([1, 10, 50, 1000]), max_call=rng.choice([1, 50, 300]),
                      reopen=rng.choice([0, 0.01, 0.1]), durable=durable)
        if durable not in points:
            points[durable] = kill_points(ctx, "consume", params,
                                          CONSUMER_SYSCALLS + (("fsync", "fdatasync") if durable else ()),
                                          prepare=lambda sample: fill(sample, random.Random(0), 2000))
        syscall, n = points[durable].pick(rng)
        run.label += f" (kill at {syscall} #{n}, ack_every={params['ack_every']}, max_call={params['max_call']})"
        proc = run_killed_at(child_argv("consume", **params), syscall, n)
        was_killed = proc.returncode == -signal.SIGKILL
        if was_killed:
            killed[syscall] += 1
        elif proc.returncode != 0:
            run.fail(f"the consumer failed ({proc.returncode}): {proc.stderr[-500:]}")
        received = [int(line) for line in report_lines(report) if line != b"done"]
        check_consumer_run(run, before, received, params["ack_every"] + 100 + params["max_call"], killed=was_killed)
    result.notes.append(killed_note(killed, result.runs))
