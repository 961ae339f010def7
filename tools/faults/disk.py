"""Scenario 6: a full disk (a small tmpfs), and failed writes injected by strace (ENOSPC, EIO)."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import tempfile
from typing import Dict, List, Optional

from turbo_queue import BatchWriteError, Enqueuer, recover

from .context import Context, Run, scenario
from .folder import check_files, drain, folder_items, groups
from .processes import KillPoints, Unavailable, child_argv, report_lines, run_killed_at
from .syscall_kills import check_plan, kill_points, make_plan
from .tally import Result, tally


class Tmpfs:
    """A small tmpfs mounted for one run (root only), unmounted on leaving; ``remount_ro()`` on demand."""

    def __init__(self, root: str, size: int, inodes: Optional[int] = None) -> None:
        self.path = tempfile.mkdtemp(prefix="tmpfs-", dir=root)
        options = f"size={size}" + (f",nr_inodes={inodes}" if inodes else "")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", self.path], capture_output=True, text=True)
        if proc.returncode != 0:
            os.rmdir(self.path)
            raise Unavailable(f"cannot mount a tmpfs ({proc.stderr.strip() or proc.returncode}): run as root "
                              f"(or in a container allowed to mount)")

    def remount_ro(self) -> None:
        subprocess.run(["mount", "-o", "remount,ro", self.path], check=True, capture_output=True)

    def __enter__(self) -> "Tmpfs":
        return self

    def __exit__(self, *exc: object) -> None:
        if subprocess.run(["umount", self.path], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", self.path], capture_output=True)
        os.rmdir(self.path)


def fill_disk(folder: str) -> Optional[str]:
    """Write a filler file until the filesystem is full; its path (None: no inode was left for it)."""
    path = os.path.join(folder, "filler")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        return None  # full already: the producer's last file took the last inode
    try:
        while True:
            os.write(fd, b"f" * 4096)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return path


def _disk_full_run(mount: str, rng: random.Random, run: Run) -> None:
    result = run.result
    folder = os.path.join(mount, "q")
    batch_size, chunk = rng.choice([50, 300, 2000]), rng.choice([1, 20, 100])
    pad = rng.choice([50, 500])
    producer = Enqueuer(folder, batch_size=batch_size, chunk_size=chunk, max_batch_delay=3600,
                        durable=rng.random() < 0.3)
    handed_over: List[int] = []
    batch: List[int] = []
    error: Optional[BaseException] = None
    i = 0
    try:
        while i < 10**6 and error is None:
            batch.append(i)
            try:
                producer.put({"id": i, "pad": "d" * pad})
                if len(batch) == batch_size:
                    handed_over += batch
                    batch = []
                elif rng.random() < 0.002:
                    producer.flush()
                    handed_over += batch
                    batch = []
            except BatchWriteError as exc:
                error = exc
            except Exception as exc:  # anything else is not the typed error the contract promises
                run.fail(f"put raised {type(exc).__name__}: {exc}")
                return
            i += 1
        if error is None:
            run.fail("the disk never filled")
            return
        if not isinstance(error, OSError) or getattr(error, "items", None) != len(batch):
            run.fail(f"BatchWriteError says {getattr(error, 'items', None)} items were not handed over; "
                     f"the failed batch held {len(batch)}")
        found = check_files(folder, result, run.label + " after the error")
        got = [item["id"] for item in folder_items(folder, found["ready"])]
        if sorted(got) != handed_over:
            run.fail(f"the folder holds {len(got)} items, {len(handed_over)} were handed over")
        filler = fill_disk(mount)
        try:  # consumers work on a full disk: they may not record positions, but they delete files
            got = [item["id"] for item in drain(folder, ack_every=rng.choice([1, 10, 1000]))]
        except Exception as exc:
            run.fail(f"a consumer on the full disk raised {type(exc).__name__}: {exc}")
            got = []
        # a consumer that cannot record its position may deliver items again: counted, not a failure
        tally(result, run.label + " (from the full disk)", handed_over, got, duplicates_allowed=None)
        if filler is not None:
            os.unlink(filler)
        more = [{"id": 10**7 + j} for j in range(batch_size + 7)]
        for item in more:  # the same producer works again once there is space
            producer.put(item)
        producer.flush()
        tally(result, run.label + " (after space was freed)", [item["id"] for item in more],
              [item["id"] for item in drain(folder)])
        if os.listdir(folder):
            run.fail(f"left in the folder: {os.listdir(folder)[:4]}")
    finally:
        producer.close()


@scenario("disk_full", "6. disk full (small tmpfs: blocks, inodes)")
def scenario_disk_full(ctx: Context, result: Result) -> None:
    """6. A producer fills a small tmpfs (blocks or inodes): a typed BatchWriteError, nothing partial
    handed over, consumers go on on the full disk, and the same producer works once space is freed."""
    rng = ctx.rng
    for run in ctx.each_run(result, 20, 4, 60):
        inodes = rng.choice([None, None, 14])
        size = rng.choice([400_000, 1_000_000, 3_000_000]) if inodes is None else 50_000_000
        run.label += f" (size {size}, inodes {inodes})"
        with Tmpfs(ctx.root, size, inodes) as mount:
            _disk_full_run(mount.path, rng, run)


INJECTED_ERRORS = (("pwrite64", "ENOSPC"), ("pwrite64", "EIO"), ("write", "ENOSPC"), ("write", "EIO"),
                   ("rename", "ENOSPC"), ("rename", "EIO"), ("openat", "ENOSPC"), ("unlink", "EIO"),
                   ("ftruncate", "EIO"), ("fcntl", "EIO"), ("fsync", "EIO"), ("fdatasync", "EIO"))


@scenario("failed_writes", "6. failed writes injected (ENOSPC, EIO)")
def scenario_failed_writes(ctx: Context, result: Result) -> None:
    """6. The N-th call of a write-path system call fails (ENOSPC, EIO, injected by strace): the
    producer gets BatchWriteError, hands over nothing of that batch, leaves nothing behind, and its
    next batches go through."""
    rng = ctx.rng
    points: Dict[bool, KillPoints] = {}
    failed_runs = 0
    for run in ctx.each_run(result, 100, 30, 400):
        report = run.report()
        plan = make_plan(rng, big=False)
        syscall, code = rng.choice(INJECTED_ERRORS)
        plan["durable"] = durable = syscall in ("fsync", "fdatasync") or rng.random() < 0.2
        params = dict(plan, folder=run.folder, report=report, seed=rng.randrange(2**32))
        if durable not in points:
            points[durable] = kill_points(ctx, "produce", params, sorted({s for s, _ in INJECTED_ERRORS}))
        low, high = points[durable].ranges[syscall]
        n = rng.randint(low + 1, high)
        run.label += f" ({syscall} #{n} fails with {code}, durable={durable})"
        proc = run_killed_at(child_argv("produce", **params), syscall, n, error=code)
        lines = report_lines(report)
        if proc.returncode != 0 or b"closed" not in lines:
            run.fail(f"the producer did not carry on ({proc.returncode}): {proc.stderr[-600:]}")
        failed_runs += any(line.startswith(b"failed") for line in lines)
        litter = [n for k in ("loading", "chosen", "creating", "journal") for n in groups(run.folder)[k]]
        if litter:
            run.fail(f"the producer left {litter[:4]} behind")
        recover(run.folder)
        check_plan(run, plan, report)
    result.notes.append(f"{failed_runs} runs raised BatchWriteError")
