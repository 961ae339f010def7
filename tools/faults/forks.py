"""Scenario 9: fork. A parent that dies while its forked children live, children that inherit an
Enqueuer and a Dequeuer, and a Queue used across os.fork()."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import time
from typing import List

from turbo_queue import Dequeuer, Enqueuer, _folder, recover

from .context import Context, Run, scenario
from .folder import drain, folder_items, write_batch
from .processes import DEADLINE, MP, child, child_argv, wait_for
from .tally import Result, tally


def _sleep_forever(started: int) -> None:
    os.write(started, b"m")  # the fork hooks have run in this child by now
    time.sleep(3600)


@child("fork_parent_dies")
def child_fork_parent_dies(p: dict) -> None:
    """Hold a loading_ file (a batch in progress) and a chosen_ one (a batch half read), fork
    children (os.fork and a multiprocessing child) that live on, report, and wait to be killed."""
    producer = Enqueuer(p["folder"], max_batch_delay=3600, chunk_size=10)
    producer.put_many([{"id": 10**6 + i} for i in range(25)])  # written into the loading_ file, not committed
    consumer = Dequeuer(p["folder"], ack_every=2, recover_every=3600)
    got = [consumer.get(timeout=10)["id"] for _ in range(5)]
    started_r, started_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(started_w, b"f")  # os.fork() returns in the child after the fork hooks ran
        time.sleep(3600)
        os._exit(0)
    child = MP.Process(target=_sleep_forever, args=(started_w,), daemon=False)
    child.start()
    # Wait until both children run: until a child's fork hooks ran, it still holds the inherited
    # descriptors, and with them the parent's flocks (a transient, which recover() sees as live).
    started = b""
    while len(started) < 2:
        started += os.read(started_r, 2)
    loading = producer._batch.name.filename  # noqa: SLF001 - the test needs the file's name
    chosen = consumer._batch.name.filename  # noqa: SLF001
    print(json.dumps({"children": [pid, child.pid], "loading": loading, "chosen": chosen, "got": got}), flush=True)
    time.sleep(3600)


@child("fork_inherit")
def child_fork_inherit(p: dict) -> None:
    """A parent with a half-read batch and unflushed items forks; the child uses the inherited
    Enqueuer and Dequeuer; both report what they got."""
    producer = Enqueuer(p["folder"], max_batch_delay=3600)
    producer.put_many([{"id": 10**6 + i} for i in range(5)])
    consumer = Dequeuer(p["folder"], ack_every=1, recover_every=3600)
    got = [consumer.get(timeout=10)["id"] for _ in range(3)]
    pid = os.fork()
    if pid == 0:
        mine = []
        try:
            while True:
                mine += [item["id"] for item in consumer.get_many(50, block=False)]
        except queue.Empty:
            pass
        producer.put_many([{"id": 2 * 10**6 + i} for i in range(7)])
        with open(p["report"] + ".child", "w") as f:
            json.dump(mine, f)
        sys.exit(0)  # a normal exit: atexit closes the child's Enqueuer and Dequeuer
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the forked child exited {os.waitstatus_to_exitcode(status)}")
    try:
        while True:
            got += [item["id"] for item in consumer.get_many(50, block=False)]
    except queue.Empty:
        pass
    producer.put({"id": 3 * 10**6})
    producer.close()
    consumer.close()
    with open(p["report"], "w") as f:
        json.dump(got, f)


@child("fork_queue")
def child_fork_queue(p: dict) -> None:
    """turbo_queue.Queue used across os.fork() without multiprocessing."""
    import turbo_queue
    q = turbo_queue.Queue()
    q.put("before fork")
    pid = os.fork()
    if pid == 0:
        q.put("from child")
        got = q.get(timeout=10)
        with open(p["report"] + ".child", "w") as f:
            json.dump([got], f)
        sys.exit(0)
    _, status = os.waitpid(pid, 0)
    got = []
    q.put("after fork")
    try:
        while True:
            got.append(q.get(timeout=1))
    except queue.Empty:
        pass
    q.close()
    with open(p["report"], "w") as f:
        json.dump({"got": got, "child_exit": os.waitstatus_to_exitcode(status)}, f)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _parent_dies(ctx: Context, run: Run) -> None:
    """(a) the parent dies, its children live on: they must not keep its files locked."""
    result, rng = run.result, ctx.rng
    ids = list(range(300))
    write_batch(run.folder, ids, _folder.READY, chunk=rng.choice([1, 10, 100]))
    proc = subprocess.Popen(child_argv("fork_parent_dies", folder=run.folder), stdout=subprocess.PIPE, text=True)
    children: List[int] = []
    try:
        info = json.loads(proc.stdout.readline())
        children = info["children"]
        proc.kill()
        proc.wait(DEADLINE)
        wait_for(lambda: all(_alive(pid) for pid in children), "children alive")
        report = recover(run.folder)
        if report.live:
            run.fail(f"files of the dead parent are held by its children: {report.live}")
        if info["chosen"] not in report.requeued:
            run.fail(f"the dead parent's chosen_ file was not re-queued: {report}")
        if info["loading"] not in report.removed + report.requeued:
            run.fail(f"the dead parent's loading_ file was not recovered: {report}")
        if not all(_alive(pid) for pid in children):
            run.fail("the children died, the check proved nothing")
        after = [item["id"] for item in folder_items(run.folder)]
        if not after or after != ids[after[0]:] or after[0] > 5:
            run.fail(f"after recovery the folder holds ids {after[:3]}..., not the unacknowledged ones")
        result.items += len(ids)
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _inherited(run: Run) -> None:
    """(b) children inherit an Enqueuer and a Dequeuer."""
    report = run.report("fork.json")
    run.remove_at_end(report + ".child")
    ids = list(range(900))
    for start in range(0, 900, 300):
        write_batch(run.folder, ids[start:start + 300], _folder.READY, chunk=10)
    proc = subprocess.run(child_argv("fork_inherit", folder=run.folder, report=report), capture_output=True,
                          text=True, timeout=DEADLINE)
    if proc.returncode != 0:
        run.fail(f"exited {proc.returncode}: {proc.stderr[-600:]}")
        return
    got = []
    for path in (report, report + ".child"):
        with open(path) as f:
            got += json.load(f)
    got += [item["id"] for item in drain(run.folder)]
    expected = set(ids) | {10**6 + i for i in range(5)} | {2 * 10**6 + i for i in range(7)} | {3 * 10**6}
    tally(run.result, run.label, expected, got)


def _queue_across_fork(run: Run) -> None:
    """(c) a Queue used across os.fork()."""
    report = run.report("queue.json")
    run.remove_at_end(report + ".child")
    proc = subprocess.run(child_argv("fork_queue", report=report), capture_output=True, text=True, timeout=DEADLINE)
    if proc.returncode != 0:
        run.fail(f"exited {proc.returncode}: {proc.stderr[-600:]}")
        return
    with open(report) as f:
        out = json.load(f)
    with open(report + ".child") as f:
        child_got = json.load(f)
    tally(run.result, run.label, ["after fork", "before fork", "from child"], out["got"] + child_got)
    if out["child_exit"] != 0:
        run.fail(f"the child exited {out['child_exit']}")


@scenario("fork", "9. fork: dead parent, inherited queues, os.fork")
def scenario_fork(ctx: Context, result: Result) -> None:
    """9. A parent that dies while its forked children live (they must not keep its files locked);
    children that inherit an Enqueuer and a Dequeuer; a Queue used across os.fork()."""
    for number in range(ctx.runs(10, 1, 40)):
        with ctx.run(result, f"run {number} (a)") as run:
            _parent_dies(ctx, run)
        with ctx.run(result, f"run {number} (b)") as run:
            _inherited(run)
        with ctx.run(result, f"run {number} (c)") as run:
            _queue_across_fork(run)
