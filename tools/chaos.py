#!/usr/bin/env python3
"""chaos: inject faults into turbo_queue on purpose, many times, and count what was lost.

Each scenario breaks the queue in one way (SIGKILL at a random moment or at the N-th call of a
chosen system call, a full disk, failed writes, damaged or foreign files, forks, poison items,
permissions), again and again, and counts per item what was lost, duplicated or unexpected.
After every run each remaining batch file is checked with ``PRAGMA integrity_check``, and while
processes run an inotify witness checks every change of the folder as it happens: no ``ready_``
file may appear while a journal of the same batch exists (R1), and no batch may have two names.

    python tools/chaos.py                  # the medium run: a few minutes, prints a table
    python tools/chaos.py --quick          # what CI runs (tests/test_faults.py calls the same code)
    python tools/chaos.py --long           # more runs, and a soak of ten million items over 10 minutes
    python tools/chaos.py --only soak --soak-items 5000000

Exit status: 0 when nothing was lost and every check held, 1 otherwise, 2 when a scenario could
not run here (strace missing, not root for mount), 130 on Ctrl-C. Kill points at a system call
use strace's fault injection (``-e inject=SYSCALL:signal=KILL:when=N``); the disk-full scenario
mounts a small tmpfs (root). The table's heading shows the seed: ``--seed`` replays the run.
"""

from __future__ import annotations

import argparse
import collections
import errno
import io
import json
import logging
import multiprocessing
import os
import pickle
import queue
import random
import re
import select
import shutil
import signal
import site
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TOOLS)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from turbo_queue import BatchWriteError, Dequeuer, Enqueuer, recover  # noqa: E402
from turbo_queue import _folder, _platform, _shard  # noqa: E402
from turbo_queue.monitor import read_items  # noqa: E402

MP = multiprocessing.get_context("fork")
DEADLINE = 60.0  # for any one thing a run waits for; a hang fails the run instead of stalling it
CHAOS = os.path.abspath(__file__)


class Unavailable(Exception):
    """A scenario cannot run on this machine (a tool or a privilege is missing); says how to fix it."""


# -- results -------------------------------------------------------------------------------------


@dataclass
class Result:
    """What one scenario did and found. ``ok``: nothing lost, every file sound, every check held."""

    scenario: str
    runs: int = 0
    items: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    bad_files: int = 0
    integrity_failures: int = 0
    failure_count: int = 0
    failures: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    seed: int = 0
    seconds: float = 0.0
    unavailable: str = ""

    @property
    def ok(self) -> bool:
        return not self.unavailable and self.lost == 0 and self.integrity_failures == 0 and self.failure_count == 0

    def fail(self, message: str) -> None:
        self.failure_count += 1
        if len(self.failures) < 30:
            self.failures.append(message)

    def as_dict(self) -> dict:
        return {key: getattr(self, key) for key in (
            "scenario", "runs", "items", "lost", "duplicated", "unexpected", "bad_files", "integrity_failures",
            "failure_count", "failures", "notes", "seed", "seconds", "unavailable")} | {"ok": self.ok}


# -- the folder ------------------------------------------------------------------------------------

JOURNAL_SUFFIXES = ("-journal", "-wal", "-shm")


def groups(folder: str) -> Dict[str, List[str]]:
    """The folder's entries by protocol state, plus hidden creating files, journals and others."""
    found: Dict[str, List[str]] = {k: [] for k in ("loading", "ready", "chosen", "bad", "creating", "journal", "other")}
    for name in sorted(os.listdir(folder)):
        parsed = _folder.parse_name(name)
        if parsed is not None:
            found[parsed.state].append(name)
        elif name.startswith(_folder.CREATING):
            found["creating"].append(name)
        elif name.endswith(JOURNAL_SUFFIXES):
            found["journal"].append(name)
        else:
            found["other"].append(name)
    return found


def integrity(path: str) -> List[str]:
    """PRAGMA integrity_check of a file, read-only: ``["ok"]`` when sound (SQLite's error if it cannot read it)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as exc:
        return [f"{type(exc).__name__}: {exc}"]
    finally:
        conn.close()


def check_files(folder: str, result: Result, context: str, allowed: Sequence[str] = ("ready",),
                foreign: Iterable[str] = ()) -> Dict[str, List[str]]:
    """After recover() with no live process: only ``allowed`` kinds remain, every batch file sound."""
    found = groups(folder)
    foreign = set(foreign)
    for kind, names in found.items():
        names = [n for n in names if n not in foreign]
        if kind not in allowed and names:
            result.fail(f"{context}: {kind} entries remain after recover(): {names[:4]}")
    for name in found["ready"] + found["loading"] + found["chosen"]:
        if name in foreign or not os.path.isfile(os.path.join(folder, name)):
            continue
        check = integrity(os.path.join(folder, name))
        if check != ["ok"]:
            result.integrity_failures += 1
            result.fail(f"{context}: {name} fails PRAGMA integrity_check: {check[:3]}")
    result.bad_files += len([n for n in found["bad"] if n not in foreign])
    return found


def folder_items(folder: str, names: Optional[List[str]] = None) -> List[object]:
    """Every item the ready_ files would still deliver, read without claiming them."""
    items: List[object] = []
    for name in groups(folder)["ready"] if names is None else names:
        _, found = read_items(os.path.join(folder, name), 10**9)
        items.extend(found)
    return items


def set_aside_items(folder: str) -> List[object]:
    """The items consumers set aside in bad_ files (poison items and their chunks), in no order."""
    items: List[object] = []
    for name in groups(folder)["bad"]:
        meta, found = read_items(os.path.join(folder, name), 10**9)
        if "set_aside_from" in meta:
            items.extend(found)
    return items


def drain(folder: str, **settings: object) -> List[object]:
    """Everything a fresh consumer gets now (nothing else runs)."""
    out: List[object] = []
    with Dequeuer(folder, recover_every=3600, **settings) as consumer:
        while True:
            try:
                out.extend(consumer.get_many(10_000, block=False))
            except queue.Empty:
                return out


def fresh_folder(root: str) -> str:
    path = tempfile.mkdtemp(prefix="q-", dir=root)
    return path


def remove_tree(path: str) -> None:
    """Remove a run's folder, whatever modes its entries were given."""
    def onerror(func, target, _exc):
        try:
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
        except OSError:
            pass
        try:
            func(target)
        except OSError:
            pass
    shutil.rmtree(path, onerror=onerror)


def wait_for(predicate: Callable[[], bool], what: str, proc=None, deadline: float = DEADLINE) -> None:
    """Return once ``predicate()`` holds; AssertionError after ``deadline`` or if ``proc`` died first."""
    end = time.monotonic() + deadline
    while not predicate():
        if proc is not None and not proc.is_alive() and not predicate():
            raise AssertionError(f"child exited ({proc.exitcode}) before {what}")
        if time.monotonic() > end:
            raise AssertionError(f"no {what} within {deadline}s")
        time.sleep(0.001)


def report_lines(path: str) -> List[bytes]:
    """The complete lines a child wrote (a line torn by a kill is dropped)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    return data.split(b"\n")[:-1]


def report_numbers(path: str) -> List[int]:
    """The numbers a child wrote, one a line (a line torn by a kill is dropped)."""
    return [int(line) for line in report_lines(path)]


def count_lines(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def discard(path: str) -> None:
    """Remove a run's report (a child killed early may never have made it)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def open_report(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


def kill(proc) -> bool:
    """SIGKILL a forked child; True if it was still running (a real kill)."""
    alive = proc.is_alive()
    proc.kill()
    proc.join(DEADLINE)
    return alive and proc.exitcode == -signal.SIGKILL


def forked(target: Callable, *args: object):
    proc = MP.Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


# -- the inotify witness ---------------------------------------------------------------------------

_IN = _platform.Inotify


class Witness:
    """Sees every create, delete and rename in a folder, in order, across all processes (inotify).

    It checks two rules at each change: a batch never has two names at once (for instance both
    ready_ and chosen_), and no ``ready_`` file appears while a journal of the same batch exists,
    nor a journal beside a ``ready_`` file (R1: a journal separated from its database corrupts it).
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.violations: List[str] = []
        self.events = 0
        try:
            self._inotify = _IN(nonblocking=True)
        except OSError as exc:
            raise Unavailable(str(exc)) from None
        try:
            self._inotify.add_watch(folder, _IN.MOVED_FROM | _IN.MOVED_TO | _IN.CREATE | _IN.DELETE)
        except OSError as exc:
            self._inotify.close()
            raise Unavailable(str(exc)) from None
        self._fd = self._inotify.fd
        self._present: Set[str] = set(os.listdir(folder))
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="chaos-witness", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            ready, _, _ = select.select([self._fd, self._stop_r], [], [])
            if self._fd in ready:
                self._read()
            if self._stop_r in ready:
                self._read()
                return

    def _read(self) -> None:
        while True:
            events = self._inotify.read()
            if not events:
                return
            for _wd, mask, name in events:
                self._event(mask, name.decode(errors="surrogateescape"))

    def _event(self, mask: int, name: str) -> None:
        self.events += 1
        if mask & _IN.Q_OVERFLOW:
            self.violations.append("the inotify queue overflowed: some changes were not seen")
            return
        if mask & (_IN.DELETE | _IN.MOVED_FROM):
            self._present.discard(name)
            return
        if not mask & (_IN.CREATE | _IN.MOVED_TO):
            return
        self._present.add(name)
        uid, state, journal = self._parse(name)
        if uid is None:
            return
        if journal:
            if state == _folder.READY:
                self.violations.append(f"a journal appeared beside a ready_ file: {name}")
            return
        for other in self._present:
            if other == name:
                continue
            o_uid, o_state, o_journal = self._parse(other)
            if o_uid != uid:
                continue
            if o_journal and state == _folder.READY:
                self.violations.append(f"{name} appeared while {other} exists")
            elif not o_journal:
                self.violations.append(f"batch {uid} has two names: {other} and {name}")

    @staticmethod
    def _parse(name: str) -> Tuple[Optional[str], Optional[str], bool]:
        journal = name.endswith(JOURNAL_SUFFIXES)
        base = name.rsplit("-", 1)[0] if journal else name
        parsed = _folder.parse_name(base)
        if parsed is None:
            return None, None, False
        return parsed.uid, parsed.state, journal

    def close(self) -> List[str]:
        """Stop watching; the violations seen (events already queued are read first)."""
        os.write(self._stop_w, b"x")
        self._thread.join(DEADLINE)
        for fd in (self._fd, self._stop_r, self._stop_w):
            os.close(fd)
        return self.violations


# -- strace ----------------------------------------------------------------------------------------


def require_strace() -> str:
    """The strace binary; in CI (CI=true, root) it is installed from Debian's packages if missing."""
    path = shutil.which("strace")
    if path:
        return path
    if os.environ.get("CI") == "true" and os.geteuid() == 0 and shutil.which("apt-get"):
        for command in (["apt-get", "install", "-y", "-q", "strace"], ["apt-get", "update", "-q"],
                        ["apt-get", "install", "-y", "-q", "strace"]):
            subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
            path = shutil.which("strace")
            if path:
                return path
    raise Unavailable("strace is not installed: install it with `apt-get install -y strace` (Debian/Ubuntu) "
                      "or your system's package manager")


def child_argv(role: str, **params: object) -> List[str]:
    """A separate program running one of this file's child roles."""
    return [sys.executable, CHAOS, "_child", role, json.dumps(params)]


def run_killed_at(argv: List[str], syscall: str, n: int, *, error: Optional[str] = None,
                  timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``argv`` under strace, which kills it (SIGKILL) on entering its ``n``-th ``syscall``.

    With ``error`` the ``n``-th call fails with that errno instead, and the program goes on.
    The count is per thread (strace counts per tracee).
    """
    strace = require_strace()
    action = f"error={error}" if error else "signal=KILL"
    cmd = [strace, "-f", "-qq", "-o", os.devnull, "-e", f"trace={syscall}",
           "-e", f"inject={syscall}:{action}:when={n}"]
    return subprocess.run(cmd + argv, capture_output=True, text=True, timeout=timeout)


def syscall_counts(argv: List[str], syscalls: Sequence[str], timeout: float = 120) -> Dict[str, int]:
    """How often ``argv`` calls each of ``syscalls`` (all threads), from ``strace -c``."""
    strace = require_strace()
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        subprocess.run([strace, "-f", "-qq", "-c", "-o", out.name, "-e", "trace=" + ",".join(syscalls)] + argv,
                       capture_output=True, timeout=timeout, check=False)
        counts = {name: 0 for name in syscalls}
        for line in out.read().splitlines():
            tokens = line.split()
            if len(tokens) >= 5 and tokens[-1] in counts and tokens[3].isdigit():
                counts[tokens[-1]] = int(tokens[3])
    return counts


class KillPoints:
    """Picks a random call number of a system call inside the work of a child role (not its imports)."""

    def __init__(self, work_argv: List[str], syscalls: Sequence[str]) -> None:
        self.syscalls = list(syscalls)
        base = syscall_counts(child_argv("noop"), self.syscalls)
        full = syscall_counts(work_argv, self.syscalls)
        self.ranges = {s: (base[s], max(base[s] + 1, full[s])) for s in self.syscalls}

    def pick(self, rng: random.Random) -> Tuple[str, int]:
        syscall = rng.choice(self.syscalls)
        low, high = self.ranges[syscall]
        return syscall, rng.randint(low + 1, high)


# -- children ----------------------------------------------------------------------------------------
# Each child reports what it was handed (a producer: which segments were handed over; a consumer:
# which items it got) with one os.write per report, so a SIGKILL loses at most the report being
# written, never one that was written.


def plan_item(segment: int, i: int, pad: int) -> dict:
    return {"s": segment, "i": i, "p": "x" * pad}


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
            os.write(fd, b"ok %d\n" % k)
        except BatchWriteError as exc:
            os.write(fd, b"failed %d %d\n" % (k, exc.items))
            if queue_.pending:  # the rest of a segment whose first part failed: never published
                raise AssertionError(f"{queue_.pending} items pending after a BatchWriteError") from exc
    queue_.close()
    os.write(fd, b"closed\n")


def child_consume(p: dict) -> None:
    """Take everything, with get and get_many, handing back now and then; report every item got."""
    rng = random.Random(p["seed"])
    fd = open_report(p["report"])
    settings = dict(ack_every=p["ack_every"], durable=p["durable"], recover_every=3600)
    consumer = Dequeuer(p["folder"], **settings)
    got = 0
    while True:
        try:
            if rng.random() < 0.5:
                items = [consumer.get(timeout=0.3)]
            else:
                items = consumer.get_many(rng.randint(1, p["max_call"]), timeout=0.3)
        except queue.Empty:
            break
        os.write(fd, b"".join(b"%d\n" % item["id"] for item in items))
        got += len(items)
        if p["reopen"] and rng.random() < p["reopen"]:
            consumer.close()  # hands the rest of the batch back (protocol step 7)
            consumer = Dequeuer(p["folder"], **settings)
    consumer.close()
    os.write(fd, b"done\n")


def child_recover(p: dict) -> None:
    recover(p["folder"], durable=p.get("durable", False))


def child_noop(p: dict) -> None:
    """Start up as the other children do, up to their work: the baseline of KillPoints."""
    os.close(open_report(os.devnull))


CHILDREN: Dict[str, Callable[[dict], None]] = {
    "produce": child_produce, "consume": child_consume, "recover": child_recover, "noop": child_noop,
}


# -- scenario 1 and 5: producers killed ---------------------------------------------------------------


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


def scenario_producer_random_kill(ctx: "Context", result: Result) -> None:
    """1. SIGKILL a producer at a random moment (its timer rolls too): nothing handed over is lost."""
    rng = ctx.rng
    for run in range(ctx.runs(300, 30, 1000)):
        folder = fresh_folder(ctx.root)
        context = f"run {run}"
        report = os.path.join(ctx.root, f"p{run}.log")
        witness = Witness(folder)
        proc = forked(_produce_forever, folder, report, rng.randrange(2**32))
        try:
            wait_for(lambda: count_lines(report) >= 1, f"{context}: first flush", proc)
            time.sleep(rng.uniform(0, 0.03))  # the random kill point, not a wait for anything
        finally:
            kill(proc)
        handed_over = max(report_numbers(report))
        recover(folder)
        for violation in witness.close():
            result.fail(f"{context}: {violation}")
        check_files(folder, result, context)
        positions = sorted(item["i"] for item in drain(folder))
        result.runs += 1
        result.items += len(positions)
        result.duplicated += len(positions) - len(set(positions))
        if positions != list(range(len(positions))):
            result.fail(f"{context}: delivered items are not a prefix of what was put, without repeats")
        lost = handed_over - len(set(p for p in positions if p < handed_over))
        if lost > 0:
            result.lost += lost
            result.fail(f"{context}: {lost} of {handed_over} handed-over items were not delivered")
        remove_tree(folder)
        discard(report)


PRODUCER_SYSCALLS = ("pwrite64", "rename", "unlink", "openat", "fcntl", "flock", "close", "ftruncate")
DURABLE_SYSCALLS = PRODUCER_SYSCALLS + ("fsync", "fdatasync")
IN_TRANSACTION_SYSCALLS = ("pwrite64", "unlink", "openat", "fcntl", "ftruncate")


def _plan(rng: random.Random, big: bool) -> dict:
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


def check_plan(folder: str, plan: dict, report: str, result: Result, context: str) -> None:
    """After a producer of ``plan`` stopped (killed or not) and recover(): every batch file holds
    exactly one whole segment (never part of one), every segment whose roll returned is there,
    a failed segment is nowhere, and the segments there are the first ones put."""
    lines = report_lines(report)
    handed_over = {int(line.split()[1]) for line in lines if line.startswith(b"ok ")}
    failed = {int(line.split()[1]) for line in lines if line.startswith(b"failed ")}
    found = check_files(folder, result, context)
    present: Dict[int, str] = {}
    for name in found["ready"]:
        try:
            _, items = read_items(os.path.join(folder, name), 10**9)
        except (sqlite3.Error, ValueError) as exc:
            result.fail(f"{context}: {name} cannot be read: {exc}")
            continue
        segments = {item["s"] for item in items}
        result.items += len(items)
        if len(segments) != 1:
            result.fail(f"{context}: {name} holds items of segments {sorted(segments)[:5]}")
            continue
        (k,) = segments
        if not 0 <= k < len(plan["segments"]):
            result.unexpected += len(items)
            result.fail(f"{context}: {name} holds items of a segment never put")
            continue
        if [item["i"] for item in items] != list(range(plan["segments"][k])):
            result.fail(f"{context}: {name} holds {len(items)} items of segment {k}, which has "
                        f"{plan['segments'][k]}: part of a batch was published")
        if k in present:
            result.duplicated += len(items)
            result.fail(f"{context}: segment {k} is in {present[k]} and {name}")
        if k in failed:
            result.fail(f"{context}: segment {k} failed (BatchWriteError) but was published in {name}")
        present[k] = name
    for k in sorted(handed_over - set(present)):
        result.lost += plan["segments"][k]
        result.fail(f"{context}: segment {k} was handed over (its roll returned) but is not in the folder")
    expected_prefix = [k for k in range(len(plan["segments"])) if k not in failed][:len(present)]
    if sorted(present) != expected_prefix:
        result.fail(f"{context}: segments {sorted(present)} are there, not the first ones put")
    got = drain(folder)
    if len(got) != sum(plan["segments"][k] for k in present):
        result.fail(f"{context}: a consumer got {len(got)} items from these files")
    leftover = [n for n in os.listdir(folder)]
    if leftover:
        result.fail(f"{context}: left after draining: {leftover[:4]}")


def scenario_producer_syscall_kill(ctx: "Context", result: Result, big: bool = False) -> None:
    """1. SIGKILL a producer on entering its N-th call of a system call: inside a commit (pwrite64,
    unlink of the journal, fcntl locks), a roll and a rename. 5 (``big``): batches larger than the
    page cache, so a kill inside the transaction finds uncommitted pages in the file."""
    rng = ctx.rng
    syscalls = IN_TRANSACTION_SYSCALLS if big else PRODUCER_SYSCALLS
    points: Dict[bool, KillPoints] = {}
    killed = collections.Counter()
    for run in range(ctx.runs(150, 30, 500) if not big else ctx.runs(80, 10, 300)):
        folder = fresh_folder(ctx.root)
        report = os.path.join(ctx.root, f"ps{run}.log")
        plan = _plan(rng, big)
        plan["durable"] = durable = (not big) and rng.random() < 0.3
        params = dict(plan, folder=folder, report=report, seed=rng.randrange(2**32))
        if durable not in points:  # where the work starts and ends, for one representative plan
            sample = fresh_folder(ctx.root)
            points[durable] = KillPoints(child_argv("produce", **dict(params, folder=sample, report=os.devnull)),
                                         DURABLE_SYSCALLS if durable else syscalls)
            remove_tree(sample)
        syscall, n = points[durable].pick(rng)
        context = f"run {run} (kill at {syscall} #{n}, durable={durable})"
        witness = Witness(folder)
        proc = run_killed_at(child_argv("produce", **params), syscall, n)
        if proc.returncode == -signal.SIGKILL:
            killed[syscall] += 1
        elif proc.returncode != 0:
            result.fail(f"{context}: the producer failed ({proc.returncode}): {proc.stderr[-500:]}")
        recover(folder)
        for violation in witness.close():
            result.fail(f"{context}: {violation}")
        check_plan(folder, plan, report, result, context)
        result.runs += 1
        remove_tree(folder)
        discard(report)
    result.notes.append(f"killed in {sum(killed.values())} of {result.runs} runs (the others ran to the end), at: "
                        + ", ".join(f"{s} {c}" for s, c in sorted(killed.items())))


# -- scenario 2: consumers killed ---------------------------------------------------------------------------


def fill(folder: str, rng: random.Random, count: int, start: int = 0) -> List[int]:
    """Put ``count`` items with ids start.. in a few batches of random shape; their ids."""
    ids = list(range(start, start + count))
    chunk = rng.choice([1, 10, 100])
    with Enqueuer(folder, batch_size=rng.choice([50, 400, 10_000]), chunk_size=chunk, max_batch_delay=3600) as producer:
        producer.put_many([{"id": i, "pad": "y" * 30} for i in ids])
    return ids


def check_consumer_run(folder: str, before: List[int], received: List[int], result: Result, context: str,
                       bound: int, killed: bool) -> None:
    recover(folder)
    check_files(folder, result, context)
    after = [item["id"] for item in folder_items(folder)]
    result.runs += 1
    result.items += len(before)
    twice_received = len(received) - len(set(received))
    twice_after = len(after) - len(set(after))
    if twice_received or twice_after:
        result.duplicated += twice_received + twice_after
        result.fail(f"{context}: {twice_received} items got twice by one consumer, {twice_after} twice in the folder")
    strange = (set(received) | set(after)) - set(before)
    if strange:
        result.unexpected += len(strange)
        result.fail(f"{context}: {len(strange)} items never put")
    lost = set(before) - set(received) - set(after)
    if lost:
        result.lost += len(lost)
        result.fail(f"{context}: {len(lost)} items neither received nor left in the queue")
    again = len(set(received) & set(after))
    result.duplicated += again
    if again > (bound if killed else 0):
        result.fail(f"{context}: {again} received items will be delivered again (bound {bound if killed else 0})")
    rest = [item["id"] for item in drain(folder)]
    if sorted(rest) != sorted(after) or os.listdir(folder):
        result.fail(f"{context}: draining the rest gave {len(rest)} items, expected {len(after)}")


def _consume_until_killed(folder: str, report: str, seed: int, ack_every: int, max_call: int) -> None:
    rng = random.Random(seed)
    fd = open_report(report)
    consumer = Dequeuer(folder, ack_every=ack_every, recover_every=3600)
    while True:
        try:
            items = [consumer.get(timeout=1.0)] if rng.random() < 0.5 else consumer.get_many(rng.randint(1, max_call), timeout=1.0)
        except queue.Empty:
            continue
        os.write(fd, b"".join(b"%d\n" % item["id"] for item in items))


def scenario_consumer_random_kill(ctx: "Context", result: Result) -> None:
    """2. SIGKILL a consumer at a random moment: nothing lost, duplicates within the bound."""
    rng = ctx.rng
    for run in range(ctx.runs(300, 30, 1000)):
        folder = fresh_folder(ctx.root)
        report = os.path.join(ctx.root, f"c{run}.log")
        before = fill(folder, rng, rng.choice([300, 2000, 5000]))
        ack_every, max_call = rng.choice([1, 10, 50, 1000]), rng.choice([1, 50, 300])
        chunk = 100  # fill() uses at most 100 items per chunk
        proc = forked(_consume_until_killed, folder, report, rng.randrange(2**32), ack_every, max_call)
        try:
            wait_for(lambda: count_lines(report) >= 1, f"run {run}: first item", proc)
            time.sleep(rng.uniform(0, 0.02))  # the random kill point
        finally:
            kill(proc)
        received = report_numbers(report)
        check_consumer_run(folder, before, received, result, f"run {run} (ack_every={ack_every}, max_call={max_call})",
                           ack_every + chunk + max_call, killed=True)
        remove_tree(folder)
        discard(report)


CONSUMER_SYSCALLS = ("pwrite64", "rename", "unlink", "openat", "fcntl", "flock", "close")


def scenario_consumer_syscall_kill(ctx: "Context", result: Result) -> None:
    """2. SIGKILL a consumer on entering its N-th call of a system call: inside a claim (flock,
    rename), a position write (pwrite64, fcntl), a hand-back (rename) or a delete (unlink)."""
    rng = ctx.rng
    points: Dict[bool, KillPoints] = {}
    killed = collections.Counter()
    for run in range(ctx.runs(150, 30, 500)):
        folder = fresh_folder(ctx.root)
        report = os.path.join(ctx.root, f"cs{run}.log")
        before = fill(folder, rng, rng.choice([300, 2000]))
        durable = rng.random() < 0.3
        params = dict(folder=folder, report=report, seed=rng.randrange(2**32), ack_every=rng.choice([1, 10, 50, 1000]),
                      max_call=rng.choice([1, 50, 300]), reopen=rng.choice([0, 0.01, 0.1]), durable=durable)
        if durable not in points:
            sample = fresh_folder(ctx.root)
            fill(sample, random.Random(0), 2000)
            points[durable] = KillPoints(child_argv("consume", **dict(params, folder=sample, report=os.devnull)),
                                         CONSUMER_SYSCALLS + (("fsync", "fdatasync") if durable else ()))
            remove_tree(sample)
        syscall, n = points[durable].pick(rng)
        context = f"run {run} (kill at {syscall} #{n}, ack_every={params['ack_every']}, max_call={params['max_call']})"
        witness = Witness(folder)
        proc = run_killed_at(child_argv("consume", **params), syscall, n)
        was_killed = proc.returncode == -signal.SIGKILL
        if was_killed:
            killed[syscall] += 1
        elif proc.returncode != 0:
            result.fail(f"{context}: the consumer failed ({proc.returncode}): {proc.stderr[-500:]}")
        lines = report_lines(report)
        received = [int(line) for line in lines if line != b"done"]
        check_consumer_run(folder, before, received, result, context,
                           params["ack_every"] + 100 + params["max_call"], killed=was_killed)
        for violation in witness.close():
            result.fail(f"{context}: {violation}")
        remove_tree(folder)
        discard(report)
    result.notes.append(f"killed in {sum(killed.values())} of {result.runs} runs (the others ran to the end), at: "
                        + ", ".join(f"{s} {c}" for s, c in sorted(killed.items())))


# -- scenario 3: recovery killed in the middle of its work ---------------------------------------------


def write_items(folder: str, items: Sequence[object], state: str, *, acked: int = 0, chunk: int = 100,
                epoch: Optional[int] = None) -> str:
    """A committed batch of ``items`` (pickled) left in ``state`` with its lock dropped, as a process
    that died after its last commit leaves it; its file name. ``epoch``, if given, is the time in its name."""
    codec = _codec("pickle")
    batch = _folder.create(folder)
    writer = _shard.ShardWriter(batch.path, codec)
    for start in range(0, len(items), chunk):
        part = items[start:start + chunk]
        writer.append(len(part), codec.encode_many(part))
    writer.finish()
    if acked:
        set_meta(batch.path, "acked", acked)
    if epoch is not None:
        older = batch.name._replace(epoch=epoch)
        os.rename(batch.path, os.path.join(folder, older.filename))
        batch.name = older
    if state != _folder.LOADING:
        batch.move(state)
    batch.release()
    return batch.name.filename


def write_batch(folder: str, ids: List[int], state: str, acked: int = 0, chunk: int = 100,
                epoch: Optional[int] = None) -> str:
    """write_items() of one ``{"id": i}`` item per id."""
    return write_items(folder, [{"id": i} for i in ids], state, acked=acked, chunk=chunk, epoch=epoch)


def _codec(name: str):
    from turbo_queue._codecs import get_codec
    return get_codec(name)


def set_meta(path: str, key: str, value: object) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
    finally:
        conn.close()


def batch_name(state: str, epoch: Optional[int] = None) -> str:
    return f"{state}_{int(time.time()) if epoch is None else epoch}_{uuid.uuid4()}.db"


def _hot_journal(folder: str, ids: List[int], ready) -> None:
    """Commit ``ids`` into a loading_ file, then start a transaction that spills pages and wait to be killed."""
    codec = _codec("pickle")
    batch = _folder.create(folder)
    writer = _shard.ShardWriter(batch.path, codec)
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
        set_meta(os.path.join(folder, name), "format", _shard.FORMAT_VERSION + 1)
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


def check_recovered(folder: str, expected: collections.Counter, kinds: Dict[str, int], result: Result,
                    context: str) -> None:
    report = recover(folder)
    found = check_files(folder, result, context, allowed=("ready", "bad", "loading"))
    if len(found["loading"]) != kinds.get("newer", 0):
        result.fail(f"{context}: loading_ files left: {found['loading']} (report {report})")
    if len(found["bad"]) != kinds.get("bad", 0):
        result.fail(f"{context}: {len(found['bad'])} bad_ files, expected {kinds.get('bad', 0)}")
    uids = collections.Counter(_folder.parse_name(n).uid for k in ("loading", "ready", "chosen", "bad") for n in found[k])
    twice = [uid for uid, c in uids.items() if c > 1]
    if twice:
        result.fail(f"{context}: batches with two names: {twice[:3]}")
    got = collections.Counter(item["id"] for item in folder_items(folder, found["ready"]))
    lost = expected - got
    extra = got - expected
    result.runs += 1
    result.items += sum(expected.values())
    if lost:
        result.lost += sum(lost.values())
        result.fail(f"{context}: {sum(lost.values())} items lost (e.g. {sorted(lost)[:5]})")
    if extra:
        strange = [i for i in extra if i not in expected]
        result.unexpected += len(strange)
        result.duplicated += sum(extra.values()) - len(strange)
        result.fail(f"{context}: {sum(extra.values())} items more than put (e.g. {sorted(extra)[:5]})")


def _recover_in_child(folder: str) -> None:
    recover(folder)


RECOVERY_SYSCALLS = ("rename", "unlink", "pwrite64", "pread64", "openat", "fcntl", "flock", "close", "ftruncate")


def scenario_recovery_kill(ctx: "Context", result: Result) -> None:
    """3. SIGKILL recover() in the middle of its work (at a system call, or at a random moment),
    then recover again: nothing lost, nothing twice, no batch with two names."""
    rng = ctx.rng
    points: Optional[KillPoints] = None
    killed = collections.Counter()
    for run in range(ctx.runs(150, 30, 500)):
        folder = fresh_folder(ctx.root)
        expected, kinds = make_orphans(folder, rng, hot=rng.random() < 0.4)
        witness = Witness(folder)
        if rng.random() < 0.7:
            durable = rng.random() < 0.3
            if points is None:
                sample = fresh_folder(ctx.root)
                make_orphans(sample, random.Random(1), hot=True)
                points = KillPoints(child_argv("recover", folder=sample, durable=True), RECOVERY_SYSCALLS + ("fsync",))
                remove_tree(sample)
            syscall, n = points.pick(rng)
            context = f"run {run} (kill at {syscall} #{n}, durable={durable})"
            proc = run_killed_at(child_argv("recover", folder=folder, durable=durable), syscall, n)
            if proc.returncode == -signal.SIGKILL:
                killed[syscall] += 1
            elif proc.returncode != 0:
                result.fail(f"{context}: recover() failed ({proc.returncode}): {proc.stderr[-500:]}")
        else:
            context = f"run {run} (kill at a random moment)"
            proc = forked(_recover_in_child, folder)
            time.sleep(rng.uniform(0, 0.01))
            if kill(proc):
                killed["random moment"] += 1
        check_recovered(folder, expected, kinds, result, context)
        for violation in witness.close():
            result.fail(f"{context}: {violation}")
        remove_tree(folder)
    result.notes.append(f"killed in {sum(killed.values())} of {result.runs} runs (the others ran to the end), at: "
                        + ", ".join(f"{s} {c}" for s, c in sorted(killed.items())))


# -- scenario 4: recover() in a loop beside live producers and consumers ------------------------------------


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


def _recover_loop(folder: str, stop, out: str) -> None:
    passes = with_live = 0
    taken: List[str] = []
    while not stop.is_set():
        passes += 1
        report = recover(folder)
        with_live += bool(report.live)
        taken += report.requeued + report.quarantined + report.refused
        # a producer's hidden file taken between its open and its lock holds nothing; the producer retries
        taken += [n for n in report.removed if not n.startswith(_folder.CREATING)]
    with open(out, "w") as f:
        json.dump({"passes": passes, "with_live": with_live, "taken": taken}, f)


def scenario_recover_loop(ctx: "Context", result: Result) -> None:
    """4. recover() in a tight loop beside 3 producers and 3 consumers: it never takes a live file."""
    rng = ctx.rng
    producers, consumers = 3, 3
    per_producer = ctx.pick(30_000, 5000, 100_000)
    passes = with_live = 0
    for run in range(ctx.runs(3, 1, 10)):
        folder = fresh_folder(ctx.root)
        context = f"run {run}"
        done, stop = MP.Event(), MP.Event()
        loop_out = os.path.join(ctx.root, f"loop{run}.json")
        outs = [os.path.join(ctx.root, f"pc{run}-{c}.log") for c in range(consumers)]
        witness = Witness(folder)
        looper = forked(_recover_loop, folder, stop, loop_out)
        cons = [forked(_pipeline_consumer, folder, done, out, rng.randrange(2**32)) for out in outs]
        prods = [forked(_pipeline_producer, folder, p, per_producer, rng.randrange(2**32)) for p in range(producers)]
        for proc in prods:
            proc.join(DEADLINE * 3)
            if proc.exitcode != 0:
                result.fail(f"{context}: a producer exited {proc.exitcode}")
        done.set()
        for proc in cons:
            proc.join(DEADLINE)
            if proc.exitcode != 0:
                result.fail(f"{context}: a consumer exited {proc.exitcode}")
        stop.set()
        looper.join(DEADLINE)
        try:
            with open(loop_out) as f:
                stats = json.load(f)
        except FileNotFoundError:
            result.fail(f"{context}: the recover() loop crashed (exit code {looper.exitcode})")
            stats = {"passes": 0, "with_live": 0, "taken": []}
        passes += stats["passes"]
        with_live += stats["with_live"]
        if stats["taken"]:
            result.fail(f"{context}: recover() took files of live processes: {stats['taken'][:5]}")
        received = [i for out in outs for i in report_numbers(out)]
        # a consumer that found the last ready_ file locked for an instant by recover()'s probe moves
        # on (losing a claim is normal), so a batch may be left for the next consumer
        received += [item["id"] for item in drain(folder)]
        for violation in witness.close():
            result.fail(f"{context}: {violation}")
        expected = {p * 10**7 + i for p in range(producers) for i in range(per_producer)}
        counts = collections.Counter(received)
        result.runs += 1
        result.items += len(expected)
        result.duplicated += sum(c - 1 for c in counts.values() if c > 1)
        missing = expected - set(counts)
        result.lost += len(missing)
        result.unexpected += len(set(counts) - expected)
        if missing or len(received) != len(expected):
            result.fail(f"{context}: {len(missing)} lost, {len(received) - len(expected)} more than put")
        if os.listdir(folder):
            result.fail(f"{context}: left in the folder: {os.listdir(folder)[:4]}")
        remove_tree(folder)
        for path in outs + [loop_out]:
            if os.path.exists(path):
                os.unlink(path)
    result.notes.append(f"{passes} recover() passes, {with_live} of them while files were held")
    if with_live == 0:
        result.fail("recover() never ran while a file was held: the check proved nothing")


# -- scenario 6: a full disk, and failed writes ------------------------------------------------------------


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


def fill_disk(folder: str) -> str:
    """Write a filler file until the filesystem is full; its path."""
    path = os.path.join(folder, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"f" * 4096)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return path


def _disk_full_run(mount: str, rng: random.Random, result: Result, context: str) -> None:
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
                result.fail(f"{context}: put raised {type(exc).__name__}: {exc}")
                return
            i += 1
        if error is None:
            result.fail(f"{context}: the disk never filled")
            return
        if not isinstance(error, OSError) or getattr(error, "items", None) != len(batch):
            result.fail(f"{context}: BatchWriteError says {getattr(error, 'items', None)} items were not handed "
                        f"over; the failed batch held {len(batch)}")
        found = check_files(folder, result, context + " after the error")
        got = [item["id"] for item in folder_items(folder, found["ready"])]
        if sorted(got) != handed_over:
            result.fail(f"{context}: the folder holds {len(got)} items, {len(handed_over)} were handed over")
        filler = fill_disk(mount)
        try:  # consumers work on a full disk: they may not record positions, but they delete files
            got = [item["id"] for item in drain(folder, ack_every=rng.choice([1, 10, 1000]))]
        except Exception as exc:
            result.fail(f"{context}: a consumer on the full disk raised {type(exc).__name__}: {exc}")
            got = []
        result.items += len(handed_over)
        lost = set(handed_over) - set(got)
        result.lost += len(lost)
        result.duplicated += len(got) - len(set(got))
        if lost:
            result.fail(f"{context}: {len(lost)} handed-over items were not delivered from the full disk")
        os.unlink(filler)
        more = [{"id": 10**7 + j} for j in range(batch_size + 7)]
        for item in more:  # the same producer works again once there is space
            producer.put(item)
        producer.flush()
        again = [item["id"] for item in drain(folder)]
        if sorted(again) != [item["id"] for item in more]:
            result.fail(f"{context}: after space was freed, {len(again)} of {len(more)} items came through")
        result.items += len(more)
        if os.listdir(folder):
            result.fail(f"{context}: left in the folder: {os.listdir(folder)[:4]}")
    finally:
        producer.close()


def scenario_disk_full(ctx: "Context", result: Result) -> None:
    """6. A producer fills a small tmpfs (blocks or inodes): a typed BatchWriteError, nothing partial
    published, consumers go on on the full disk, and the same producer works once space is freed."""
    rng = ctx.rng
    for run in range(ctx.runs(20, 4, 60)):
        inodes = rng.choice([None, None, 14])
        size = rng.choice([400_000, 1_000_000, 3_000_000]) if inodes is None else 50_000_000
        with Tmpfs(ctx.root, size, inodes) as mount:
            _disk_full_run(mount.path, rng, result, f"run {run} (size {size}, inodes {inodes})")
        result.runs += 1


INJECTED_ERRORS = (("pwrite64", "ENOSPC"), ("pwrite64", "EIO"), ("rename", "ENOSPC"), ("rename", "EIO"),
                   ("openat", "ENOSPC"), ("unlink", "EIO"), ("ftruncate", "EIO"), ("fcntl", "EIO"),
                   ("fsync", "EIO"), ("fdatasync", "EIO"))


def scenario_failed_writes(ctx: "Context", result: Result) -> None:
    """6. The N-th call of a write-path system call fails (ENOSPC, EIO, injected by strace): the
    producer gets BatchWriteError, publishes nothing of that batch, leaves nothing behind, and its
    next batches go through."""
    rng = ctx.rng
    points: Dict[bool, KillPoints] = {}
    failed_runs = 0
    for run in range(ctx.runs(100, 30, 400)):
        folder = fresh_folder(ctx.root)
        report = os.path.join(ctx.root, f"fw{run}.log")
        plan = _plan(rng, big=False)
        syscall, code = rng.choice(INJECTED_ERRORS)
        plan["durable"] = durable = syscall in ("fsync", "fdatasync") or rng.random() < 0.2
        params = dict(plan, folder=folder, report=report, seed=rng.randrange(2**32))
        if durable not in points:
            sample = fresh_folder(ctx.root)
            points[durable] = KillPoints(child_argv("produce", **dict(params, folder=sample, report=os.devnull)),
                                         sorted({s for s, _ in INJECTED_ERRORS}))
            remove_tree(sample)
        low, high = points[durable].ranges[syscall]
        n = rng.randint(low + 1, high)
        context = f"run {run} ({syscall} #{n} fails with {code}, durable={durable})"
        proc = run_killed_at(child_argv("produce", **params), syscall, n, error=code)
        lines = report_lines(report)
        if proc.returncode != 0 or b"closed" not in lines:
            result.fail(f"{context}: the producer did not carry on ({proc.returncode}): {proc.stderr[-600:]}")
        failed_runs += any(line.startswith(b"failed") for line in lines)
        litter = [n for k in ("loading", "chosen", "creating", "journal") for n in groups(folder)[k]]
        if litter:
            result.fail(f"{context}: the producer left {litter[:4]} behind")
        recover(folder)
        check_plan(folder, plan, report, result, context)
        result.runs += 1
        remove_tree(folder)
        discard(report)
    result.notes.append(f"{failed_runs} runs raised BatchWriteError")


# -- scenario 7: damaged files --------------------------------------------------------------------------

DAMAGES = ("truncated", "bitflip", "zero", "garbage", "text", "header", "newer", "count", "acked")


def damage(path: str, kind: str, rng: random.Random) -> None:
    size = os.path.getsize(path)
    if kind == "truncated":
        os.truncate(path, rng.randrange(0, size))
    elif kind == "bitflip":
        with open(path, "r+b") as f:
            for _ in range(rng.randint(1, 16)):
                pos = rng.randrange(size)
                f.seek(pos)
                byte = f.read(1)[0]
                f.seek(pos)
                f.write(bytes([byte ^ (1 << rng.randrange(8))]))
    elif kind == "zero":
        os.truncate(path, 0)
    elif kind == "garbage":
        with open(path, "wb") as f:
            f.write(os.urandom(rng.randint(1, 20_000)))
    elif kind == "text":
        with open(path, "w") as f:
            f.write("this is not a batch file\n" * rng.randint(1, 500))
    elif kind == "header":
        with open(path, "r+b") as f:
            f.write(os.urandom(100))
    elif kind == "newer":
        set_meta(path, "format", _shard.FORMAT_VERSION + 1)
    elif kind == "count":
        count = int(raw_meta(path)["count"])
        set_meta(path, "count", rng.choice([count - rng.randint(1, count), count + rng.randint(1, 50)]))
    elif kind == "acked":
        set_meta(path, "acked", int(raw_meta(path)["count"]) + rng.randint(1, 50))


def raw_meta(path: str) -> Dict[str, object]:
    """A batch file's meta table, read-only, whatever its version."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT key, value FROM meta").fetchall())
    finally:
        conn.close()


def scenario_damaged(ctx: "Context", result: Result) -> None:
    """7. A damaged ready_ file between two good ones: it becomes bad_ (a newer format is refused and
    left as it is), the good ones are delivered, and no item is dropped silently."""
    rng = ctx.rng
    outcomes = collections.Counter()
    for run in range(ctx.runs(300, 60, 1000)):
        folder = fresh_folder(ctx.root)
        kind = DAMAGES[run % len(DAMAGES)] if run < len(DAMAGES) else rng.choice(DAMAGES)
        context = f"run {run} ({kind})"
        now = int(time.time())
        files = {}
        for tag, epoch, start in (("before", now - 30, 0), ("damaged", now - 20, 10**5), ("after", now - 10, 2 * 10**5)):
            ids = list(range(start, start + rng.randint(1, 800)))
            files[tag] = (write_batch(folder, ids, _folder.READY, chunk=rng.choice([1, 10, 100]), epoch=epoch), ids)
        damaged_name, damaged_ids = files["damaged"]
        damaged_path = os.path.join(folder, damaged_name)
        damage(damaged_path, kind, rng)
        with open(damaged_path, "rb") as f:
            damaged_bytes = f.read()
        try:
            got = drain(folder)
        except Exception as exc:
            result.fail(f"{context}: the consumer raised {type(exc).__name__}: {exc}")
            got = []
        result.runs += 1
        good = set(files["before"][1]) | set(files["after"][1])
        wanted = {i: {"id": i} for i in good | set(damaged_ids)}
        ids = [item.get("id") if isinstance(item, dict) else None for item in got]
        intact = [i for i, item in zip(ids, got) if i in wanted and item == wanted[i]]
        # a flipped bit can also turn an item of the damaged file into another one of its items
        twice = collections.Counter(intact)
        changed_into_another = sum(c - 1 for i, c in twice.items() if c > 1 and i in set(damaged_ids))
        altered = len(got) - len(intact) + changed_into_another
        intact = list(twice)
        result.items += len(good) + len(damaged_ids)
        result.duplicated += sum(c - 1 for i, c in twice.items() if c > 1 and i in good)
        missing_good = good - set(intact)
        if missing_good:
            result.lost += len(missing_good)
            result.fail(f"{context}: {len(missing_good)} items of the undamaged files were not delivered")
        found = groups(folder)
        uid = _folder.parse_name(damaged_name).uid
        kept_whole = any(_folder.parse_name(n).uid == uid for n in found["bad"])
        aside = 0
        for name in found["bad"]:
            path = os.path.join(folder, name)
            if _folder.parse_name(name).uid == uid:
                continue
            meta = raw_meta(path)
            source = _folder.parse_name(str(meta.get("set_aside_from", "")))
            if source is None or source.uid != uid:
                result.fail(f"{context}: unexpected bad_ file {name}")
            aside += int(meta["count"]) - int(meta["acked"])
            if integrity(path) != ["ok"]:
                result.integrity_failures += 1
                result.fail(f"{context}: the set-aside file {name} fails integrity_check")
        if kind == "newer":
            if found["ready"] != [damaged_name] or open(damaged_path, "rb").read() != damaged_bytes:
                result.fail(f"{context}: a newer format was not left as it was")
            outcome = "refused"
        else:
            if found["ready"] or found["chosen"] or found["loading"]:
                result.fail(f"{context}: left {found['ready'] + found['chosen'] + found['loading']}")
            delivered_damaged = len(set(intact) & set(damaged_ids))
            silently_dropped = len(damaged_ids) - delivered_damaged - altered - aside
            if not kept_whole and silently_dropped > 0:
                result.lost += silently_dropped
                result.fail(f"{context}: {silently_dropped} items of the damaged file were neither delivered "
                            f"nor kept in a bad_ file ({len(damaged_ids)} put, {delivered_damaged} delivered, "
                            f"{altered} changed, {aside} set aside; left {os.listdir(folder)})")
            outcome = "bad_" if kept_whole else ("chunk set aside" if aside else "delivered")
        if altered:  # every chunk carries a checksum: a changed item must never come out
            result.unexpected += altered
            result.fail(f"{context}: {altered} items came out changed")
        outcomes[(kind, outcome)] += 1
        result.bad_files += len(found["bad"])
        remove_tree(folder)
    summary = collections.defaultdict(list)
    for (kind, outcome), count in sorted(outcomes.items()):
        summary[kind].append(f"{outcome} {count}")
    result.notes.append("; ".join(f"{kind}: {', '.join(parts)}" for kind, parts in summary.items()))


# -- scenario 8: foreign entries ------------------------------------------------------------------------------

NO_DAC = ["--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]


def without_dac_override() -> List[str]:
    """A command prefix that runs a program as root without the power to read everything
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH dropped), so that file modes apply to it."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        raise Unavailable("needs root and setpriv (util-linux) to run a process that file modes apply to")
    return [setpriv] + NO_DAC


def snapshot(folder: str, names: Iterable[str]) -> Dict[str, tuple]:
    state = {}
    for name in names:
        path = os.path.join(folder, name)
        info = os.lstat(path)
        if stat.S_ISREG(info.st_mode):
            with open(path, "rb") as f:
                state[name] = ("file", info.st_ino, info.st_mode, hash(f.read()))
        elif stat.S_ISLNK(info.st_mode):
            state[name] = ("link", os.readlink(path))
        elif stat.S_ISDIR(info.st_mode):
            state[name] = ("dir", info.st_ino, tuple(sorted(os.listdir(path))))
        else:
            state[name] = ("other", info.st_ino, info.st_mode)
    return state


def plant_foreign(folder: str, elsewhere: str, rng: random.Random) -> List[str]:
    """Entries that are not the protocol's though some are named like batches; their names."""
    names: List[str] = []
    now = int(time.time()) - 100  # older than the real batches: a consumer meets them first

    def name(state: str) -> str:
        n = batch_name(state, now)
        names.append(n)
        return os.path.join(folder, n)

    for state in rng.sample(["ready", "loading", "chosen", "bad"], rng.randint(1, 4)):
        os.mkdir(name(state))
        with open(os.path.join(folder, names[-1], "inside.txt"), "w") as f:
            f.write("not a batch")
    for state in rng.sample(["ready", "loading", "chosen"], rng.randint(1, 3)):
        target = os.path.join(elsewhere, write_batch(elsewhere, [-1, -2], _folder.READY))
        os.symlink(target, name(state))
    for state in rng.sample(["ready", "loading"], rng.randint(1, 2)):
        os.mkfifo(name(state))
    for state in rng.sample(["ready", "chosen", "loading"], rng.randint(1, 3)):
        path = name(state)
        folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        sock = socket.socket(socket.AF_UNIX)
        try:  # through the folder's descriptor: a socket's path must be short (108 bytes)
            sock.bind(f"/proc/self/fd/{folder_fd}/{os.path.basename(path)}")
        finally:
            sock.close()
            os.close(folder_fd)
    for state in rng.sample(["ready", "loading", "chosen"], rng.randint(1, 3)):
        # a sound batch this user may not read (mode 000): it must be left alone, not crash anything
        real = write_batch(folder, [-3, -4], state if state != "chosen" else _folder.READY)
        path = name(state)
        os.rename(os.path.join(folder, real), path)
        os.chmod(path, 0)
    if os.geteuid() == 0:
        os.mknod(name("ready"), 0o644 | stat.S_IFCHR, os.makedev(1, 3))  # like /dev/null
    uid = str(uuid.uuid4())
    for odd in ("notes.txt", "ready_x.db", f"loading_1_{uid.upper()}.db", f"ready_{now}_{uid}.db.bak",
                f"chosen_{now}_not-a-uuid.db", ".creating_notes", f"ready_{now}_{uid}.db-journal"):
        with open(os.path.join(folder, odd), "wb") as f:
            f.write(os.urandom(rng.randint(0, 3000)))
        names.append(odd)
    return names


def child_foreign_consume(p: dict) -> None:
    """recover(), recover(dry_run=True) and drain the folder; print the items got and the reports."""
    dry = recover(p["folder"], dry_run=True)
    report = recover(p["folder"])
    got = [item["id"] for item in drain(p["folder"])]
    print(json.dumps({"got": got, "report": report.as_dict(), "dry": dry.as_dict()}))


def scenario_foreign(ctx: "Context", result: Result) -> None:
    """8. Directories, symlinks, FIFOs, sockets, a device, files this user may not read and odd names,
    some named like batches, beside real batches: none is touched, nothing crashes, every item comes."""
    rng = ctx.rng
    prefix = without_dac_override()
    for run in range(ctx.runs(30, 4, 100)):
        folder = fresh_folder(ctx.root)
        elsewhere = fresh_folder(ctx.root)
        context = f"run {run}"
        foreign = plant_foreign(folder, elsewhere, rng)
        before = snapshot(folder, foreign)
        expected = list(range(500))
        write_batch(folder, expected[:200], _folder.READY)
        write_batch(folder, expected[200:350], _folder.LOADING)  # an orphan: recovery re-queues it
        write_batch(folder, expected[350:], _folder.READY)
        proc = subprocess.run(prefix + child_argv("foreign_consume", folder=folder), capture_output=True,
                              text=True, timeout=DEADLINE)
        result.runs += 1
        result.items += len(expected)
        if proc.returncode != 0:
            result.fail(f"{context}: the consumer crashed ({proc.returncode}): {proc.stderr[-800:]}")
        else:
            out = json.loads(proc.stdout.splitlines()[-1])
            got = collections.Counter(out["got"])
            missing = set(expected) - set(got)
            result.lost += len(missing)
            result.duplicated += sum(c - 1 for c in got.values())
            result.unexpected += len(set(got) - set(expected))
            if missing or len(out["got"]) != len(expected):
                result.fail(f"{context}: got {len(out['got'])} items of {len(expected)}")
            touched = set(out["report"]["requeued"] + out["report"]["removed"] + out["report"]["quarantined"]) & set(foreign)
            if touched:
                result.fail(f"{context}: recover() acted on foreign entries: {sorted(touched)[:3]}")
        after = snapshot(folder, [n for n in foreign if os.path.lexists(os.path.join(folder, n))])
        if after != before:
            changed = sorted(n for n in before if before.get(n) != after.get(n))
            result.fail(f"{context}: foreign entries were changed or removed: {changed[:4]}")
        left = [n for n in os.listdir(folder) if n not in foreign]
        if left:
            result.fail(f"{context}: left besides the foreign entries: {left[:4]}")
        remove_tree(folder)
        remove_tree(elsewhere)


# -- scenario 9: fork ---------------------------------------------------------------------------------------


def _sleep_forever(started: int) -> None:
    os.write(started, b"m")  # the fork hooks have run in this child by now
    time.sleep(3600)


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


def scenario_fork(ctx: "Context", result: Result) -> None:
    """9. A parent that dies while its forked children live (they must not keep its files locked);
    children that inherit an Enqueuer and a Dequeuer; a Queue used across os.fork()."""
    rng = ctx.rng
    for run in range(ctx.runs(10, 1, 40)):
        # (a) the parent dies, its children live on
        folder = fresh_folder(ctx.root)
        ids = list(range(300))
        write_batch(folder, ids, _folder.READY, chunk=rng.choice([1, 10, 100]))
        proc = subprocess.Popen(child_argv("fork_parent_dies", folder=folder), stdout=subprocess.PIPE, text=True)
        children: List[int] = []
        try:
            line = proc.stdout.readline()
            info = json.loads(line)
            children = info["children"]
            proc.kill()
            proc.wait(DEADLINE)
            wait_for(lambda: all(_alive(pid) for pid in children), "children alive")
            report = recover(folder)
            context = f"run {run} (a)"
            if report.live:
                result.fail(f"{context}: files of the dead parent are held by its children: {report.live}")
            if info["chosen"] not in report.requeued:
                result.fail(f"{context}: the dead parent's chosen_ file was not re-queued: {report}")
            if info["loading"] not in report.removed + report.requeued:
                result.fail(f"{context}: the dead parent's loading_ file was not recovered: {report}")
            if not all(_alive(pid) for pid in children):
                result.fail(f"{context}: the children died, the check proved nothing")
            after = [item["id"] for item in folder_items(folder)]
            if not after or after != ids[after[0]:] or after[0] > 5:
                result.fail(f"{context}: after recovery the folder holds ids {after[:3]}..., not the unacknowledged ones")
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
        result.runs += 1
        remove_tree(folder)

        # (b) children inherit an Enqueuer and a Dequeuer
        folder = fresh_folder(ctx.root)
        report_path = os.path.join(ctx.root, f"fork{run}.json")
        ids = list(range(900))
        for start in range(0, 900, 300):
            write_batch(folder, ids[start:start + 300], _folder.READY, chunk=10)
        proc = subprocess.run(child_argv("fork_inherit", folder=folder, report=report_path), capture_output=True,
                              text=True, timeout=DEADLINE)
        context = f"run {run} (b)"
        if proc.returncode != 0:
            result.fail(f"{context}: exited {proc.returncode}: {proc.stderr[-600:]}")
        else:
            with open(report_path) as f:
                got = json.load(f)
            with open(report_path + ".child") as f:
                got += json.load(f)
            got += [item["id"] for item in drain(folder)]
            counts = collections.Counter(got)
            expected = set(ids) | {10**6 + i for i in range(5)} | {2 * 10**6 + i for i in range(7)} | {3 * 10**6}
            result.items += len(expected)
            result.duplicated += sum(c - 1 for c in counts.values())
            missing = expected - set(counts)
            result.lost += len(missing)
            result.unexpected += len(set(counts) - expected)
            if missing or len(got) != len(expected):
                result.fail(f"{context}: {len(got)} items delivered ({len(set(got))} distinct) of {len(expected)}; "
                            f"missing {sorted(missing)[:5]}")
            os.unlink(report_path + ".child")
            os.unlink(report_path)
        result.runs += 1
        remove_tree(folder)

        # (c) a Queue across os.fork()
        proc = subprocess.run(child_argv("fork_queue", report=report_path), capture_output=True, text=True,
                              timeout=DEADLINE)
        context = f"run {run} (c)"
        if proc.returncode != 0:
            result.fail(f"{context}: exited {proc.returncode}: {proc.stderr[-600:]}")
        else:
            with open(report_path) as f:
                out = json.load(f)
            with open(report_path + ".child") as f:
                child_got = json.load(f)
            every = sorted(out["got"] + child_got)
            result.items += 3
            if every != ["after fork", "before fork", "from child"] or out["child_exit"] != 0:
                result.fail(f"{context}: parent got {out['got']}, child got {child_got}")
                result.lost += len({"after fork", "before fork", "from child"} - set(every))
            os.unlink(report_path + ".child")
            os.unlink(report_path)
        result.runs += 1


# -- scenario 10: poison items ------------------------------------------------------------------------------


class RaisesWhenLoaded:
    """Pickles fine; unpickling it raises ValueError (its __reduce__ names a call that fails)."""

    def __reduce__(self):
        return (int, ("not a number",))


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


def scenario_poison(ctx: "Context", result: Result) -> None:
    """10. Poison items: one that cannot be encoded is refused at put; one that cannot be decoded
    is reported and its chunk set aside in a bad_ file of its own, never delivered again, and the
    rest of its batch is delivered."""
    rng = ctx.rng
    for run in range(ctx.runs(30, 3, 100)):
        folder = fresh_folder(ctx.root)
        context = f"run {run}"
        proc = subprocess.run(child_argv("poison_produce", folder=folder, seed=rng.randrange(2**32),
                                         count=ctx.pick(5000, 2000, 20_000)),
                              capture_output=True, text=True, timeout=DEADLINE)
        result.runs += 1
        if proc.returncode != 0:
            result.fail(f"{context}: the producer failed: {proc.stderr[-600:]}")
            continue
        out = json.loads(proc.stdout.splitlines()[-1])
        errors = _CountErrors()
        logging.getLogger("turbo_queue").addHandler(errors)
        try:
            got = [item["id"] for item in drain(folder)]
            recover(folder)
            again = drain(folder)
        except Exception as exc:
            result.fail(f"{context}: the consumer raised {type(exc).__name__}: {exc}")
            continue
        finally:
            logging.getLogger("turbo_queue").removeHandler(errors)
        found = groups(folder)
        aside = 0
        for name in found["bad"]:
            meta = raw_meta(os.path.join(folder, name))
            if "set_aside_from" not in meta:
                result.fail(f"{context}: {name} is a whole batch set aside, not a chunk")
            aside += int(meta["count"])
            if integrity(os.path.join(folder, name)) != ["ok"]:
                result.integrity_failures += 1
        good = out["good"]
        counts = collections.Counter(got)
        result.items += len(good) + out["poison"]
        result.duplicated += sum(c - 1 for c in counts.values()) + len(again)
        result.unexpected += len(set(counts) - set(good))
        result.bad_files += len(found["bad"])
        lost = len(good) - len(set(got)) - (aside - out["poison"])
        if lost:
            result.lost += max(lost, 0)
            result.fail(f"{context}: {len(good)} good items put, {len(set(got))} delivered, "
                        f"{aside - out['poison']} kept with the poison: {lost} unaccounted for")
        if again:
            result.fail(f"{context}: {len(again)} items delivered again after recover()")
        if out["poison"] and not found["bad"]:
            result.fail(f"{context}: {out['poison']} poison items but no bad_ file")
        if len(errors.messages) < len(found["bad"]):
            result.fail(f"{context}: {len(found['bad'])} chunks set aside, {len(errors.messages)} errors logged")
        if found["ready"] or found["chosen"] or found["loading"]:
            result.fail(f"{context}: left: {found}")
        remove_tree(folder)


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


def scenario_poison_crash(ctx: "Context", result: Result) -> None:
    """10. A poison item that kills its consumer (at unpickling): consumers die at most
    max_crashes + 1 times on it, then its chunk is set aside and every other item delivered."""
    rng = ctx.rng
    limit = 3  # Dequeuer's default max_crashes
    deaths_seen = collections.Counter()
    for run in range(ctx.runs(20, 3, 60)):
        folder = fresh_folder(ctx.root)
        context = f"run {run}"
        count = rng.choice([200, 2000, 9000])
        where = rng.randrange(count)
        chunk = rng.choice([1, 10, 100])
        items: List[object] = [{"id": i} for i in range(count)]
        items[where] = _ExitOnLoad()
        with Enqueuer(folder, batch_size=rng.choice([500, 10_000]), chunk_size=chunk, max_batch_delay=3600) as producer:
            producer.put_many(items)
        good = set(range(count)) - {where}
        report = os.path.join(ctx.root, f"pc{run}.log")
        deaths = 0
        while True:
            proc = forked(_consume_reporting, folder, report, rng.randrange(2**32))
            proc.join(DEADLINE)
            if proc.exitcode is None:
                kill(proc)
                result.fail(f"{context}: a consumer did not finish")
                break
            if proc.exitcode == 0:
                break
            deaths += 1
            recover(folder)
            if deaths > limit + 1:
                result.fail(f"{context}: consumers died {deaths} times on one poison item (max_crashes {limit})")
                break
        deaths_seen[deaths] += 1
        check_files(folder, result, context, allowed=("bad",))
        got = report_numbers(report)
        aside = set_aside_ids(folder)
        result.runs += 1
        result.items += count
        result.duplicated += len(got) - len(set(got))
        result.unexpected += len(set(got) - good)
        lost = good - set(got) - aside
        if lost:
            result.lost += len(lost)
            result.fail(f"{context}: {len(lost)} items neither delivered nor set aside")
        found = groups(folder)
        if len(found["bad"]) != 1 or found["ready"] or found["chosen"] or found["loading"]:
            result.fail(f"{context}: expected one bad_ file and nothing else, found {found}")
        remove_tree(folder)
        discard(report)
    result.notes.append("consumer deaths per poison item: "
                        + ", ".join(f"{d} in {n} runs" for d, n in sorted(deaths_seen.items())))


# -- scenario 11: permissions ----------------------------------------------------------------------------


def other_user_python() -> Tuple[List[str], Dict[str, str]]:
    """(command prefix, environment) to run this interpreter's turbo_queue as user nobody.

    The interpreter may live where nobody may not look (/root): then a system Python of the
    same version, with this checkout and these site-packages on PYTHONPATH.
    """
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        raise Unavailable("needs root and setpriv (util-linux) to run a second user")
    paths = [REPO] + [p for p in site.getsitepackages() if os.path.isdir(p)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, os.path.realpath(sys.executable), f"/usr/bin/python{version}"):
        cmd = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", python, "-c",
               "import turbo_queue, orjson, watchdog"]
        try:
            ok = subprocess.run(cmd, env=env, capture_output=True, cwd="/", timeout=60).returncode == 0
        except OSError:
            ok = False
        if ok:
            return [python], env
    raise Unavailable(f"no Python {version} that user nobody may run with turbo_queue importable")


def as_user(python: List[str], env: Dict[str, str], group: int, umask: int, code: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [shutil.which("setpriv"), "--reuid=nobody", "--regid=nogroup", f"--groups={group}"]
    script = f"import os; os.umask({umask:#o})\n" + textwrap.dedent(code)
    return subprocess.run(cmd + python + ["-c", script, *args], env=env, capture_output=True, text=True,
                          cwd="/", timeout=DEADLINE)


SHARED_CONSUMER = """
    import json, logging, queue, sys
    logging.basicConfig(level=logging.WARNING)
    from turbo_queue import Dequeuer, Enqueuer, recover
    folder = sys.argv[1]
    got = []
    with Dequeuer(folder, ack_every=5, recover_every=3600) as consumer:
        got.append(consumer.get(timeout=10)["id"])
    with Dequeuer(folder, ack_every=5, recover_every=3600) as consumer:  # the first handed the rest back
        try:
            while True:
                got += [item["id"] for item in consumer.get_many(100, timeout=0.5)]
        except queue.Empty:
            pass
    with Enqueuer(folder) as producer:
        producer.put({"id": -7})
    print(json.dumps(got))
"""


def scenario_permissions(ctx: "Context", result: Result) -> None:
    """11. A folder this user may not write (modes, or a read-only mount): a clear PermissionError
    at construction. A folder shared by two users through a group: it works, and the files'
    modes follow the umask (0o664 & ~umask)."""
    prefix = without_dac_override()
    python, env = other_user_python()
    group = 100  # "users" on Debian; any group works, nobody gets it as a supplementary group
    # the second user must be able to reach the folder: a base in the system's temp folder, not
    # under a private (0o700) one such as pytest's
    shared_root = tempfile.mkdtemp(prefix="turbo_queue-shared-")
    os.chmod(shared_root, 0o755)
    try:
        _permission_runs(ctx, result, prefix, python, env, group, shared_root)
    finally:
        remove_tree(shared_root)


def _permission_runs(ctx: "Context", result: Result, prefix: List[str], python: List[str], env: Dict[str, str],
                     group: int, shared_root: str) -> None:
    for run in range(ctx.runs(3, 1, 10)):
        # a folder without write permission
        folder = fresh_folder(ctx.root)
        write_batch(folder, list(range(10)), _folder.READY)
        os.chmod(folder, 0o555)
        code = """
            import errno, sys
            from turbo_queue import Dequeuer, Enqueuer, recover
            for cls in (Enqueuer, Dequeuer):
                try:
                    cls(sys.argv[1])
                except PermissionError as exc:
                    assert exc.errno in (errno.EACCES, errno.EROFS) and "cannot create or rename" in str(exc), exc
                    assert exc.filename == sys.argv[1], exc.filename
                else:
                    raise AssertionError(f"{cls.__name__} accepted a folder it cannot write")
            print(recover(sys.argv[1]).as_dict())
        """
        proc = subprocess.run(prefix + [sys.executable, "-c", textwrap.dedent(code), folder], capture_output=True,
                              text=True, timeout=DEADLINE)
        if proc.returncode != 0:
            result.fail(f"run {run}: read-only folder: {proc.stderr[-600:]}")
        os.chmod(folder, 0o755)
        remove_tree(folder)
        result.runs += 1

        # a read-only mount
        with Tmpfs(ctx.root, 1_000_000) as mount:
            folder = os.path.join(mount.path, "q")
            os.mkdir(folder)
            write_batch(folder, list(range(10)), _folder.READY)
            write_batch(folder, list(range(10, 20)), _folder.LOADING)
            mount.remount_ro()
            proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), folder], capture_output=True,
                                  text=True, timeout=DEADLINE)
            if proc.returncode != 0:
                result.fail(f"run {run}: read-only mount: {proc.stderr[-600:]}")
        result.runs += 1

        # a folder shared by root and nobody through a group, with umask 002 and 022
        for umask in (0o002, 0o022):
            folder = fresh_folder(shared_root)
            os.chown(folder, 0, group)
            os.chmod(folder, 0o2775)  # setgid: new files get the folder's group
            old = os.umask(umask)
            try:
                with Enqueuer(folder, batch_size=40, chunk_size=10) as producer:
                    producer.put_many([{"id": i} for i in range(100)])
                sub = os.path.join(folder, "made-by-enqueuer")
                Enqueuer(sub).close()
            finally:
                os.umask(old)
            context = f"run {run} (umask {umask:03o})"
            modes = {oct(stat.S_IMODE(os.stat(os.path.join(folder, n)).st_mode)) for n in groups(folder)["ready"]}
            if modes != {oct(0o664 & ~umask)}:
                result.fail(f"{context}: batch files have modes {modes}, not 0o664 & ~umask")
            folder_mode = stat.S_IMODE(os.stat(sub).st_mode) & 0o777
            if folder_mode != 0o775 & ~umask:
                result.fail(f"{context}: a folder made by Enqueuer has mode {oct(folder_mode)}")
            proc = as_user(python, env, group, umask, SHARED_CONSUMER, folder)
            result.runs += 1
            result.items += 100
            if proc.returncode != 0:
                result.fail(f"{context}: the second user failed: {proc.stderr[-800:]}")
                continue
            got = json.loads(proc.stdout.splitlines()[-1])
            # With umask 022 the second user may not write root's files, so it cannot record how far
            # it got: the batch it hands back is delivered again from its last recorded position.
            if set(got) != set(range(100)) or (umask == 0o002 and len(got) != 100):
                result.fail(f"{context}: the second user got {len(got)} items ({len(set(got))} distinct) of 100")
            result.lost += len(set(range(100)) - set(got))
            result.duplicated += len(got) - len(set(got))
            if umask == 0o022 and "cannot record the acknowledged position" not in proc.stderr:
                result.fail(f"{context}: no warning that positions cannot be recorded in files of another user")
            theirs = [n for n in groups(folder)["ready"]]
            back = [item["id"] for item in drain(folder)]
            if back != [-7] or len(theirs) != 1:
                result.fail(f"{context}: root got {back} from the second user's batch")
            os.rmdir(sub)
            remove_tree(folder)


# -- scenario 12: the soak ---------------------------------------------------------------------------------

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


class Tally:
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


def scenario_soak(ctx: "Context", result: Result) -> None:
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
    tally = Tally(handed_over)
    deliveries = len(leftovers)
    for item in leftovers:
        tally.add(item)
    for report in consumer_reports:
        with open(report, "rb") as f:
            for line in f.read().split(b"\n")[:-1]:
                tally.add(int(line))
                deliveries += 1
    lost = sum(counts[:handed_over[generation]].count(0) for generation, counts in tally.counts.items())
    duplicated = sum(sum(c - 1 for c in counts if c > 1) for counts in tally.counts.values())
    bound = kills["consumer"] * (1000 + 100 + 1000)  # per consumer crash: ack_every + chunk + a get_many
    result.runs = 1
    result.items = sum(handed_over.values())
    result.lost = lost
    result.duplicated = duplicated
    result.unexpected = tally.unknown
    if lost:
        result.fail(f"{lost} handed-over items were never delivered")
    if tally.unknown:
        result.fail(f"{tally.unknown} items that no producer put")
    if duplicated > bound:
        result.fail(f"{duplicated} duplicates after {kills['consumer']} consumer kills (bound {bound})")
    if kills["producer"] + kills["consumer"] == 0:
        result.fail("nothing was killed: the soak proved nothing")
    result.notes.append(f"{deliveries:,} deliveries in {elapsed:.0f} s; {kills['producer']} producer and "
                        f"{kills['consumer']} consumer kills (one every {low}-{high} s); duplicates "
                        f"{duplicated:,} (bound {bound:,})")
    remove_tree(folder)
    for path in list(reports.values()) + consumer_reports + [stop, done]:
        os.unlink(path)


# -- scenario 13: what durable=True relies on -----------------------------------------------------------------

TRACED = "fsync,fdatasync,rename,renameat,renameat2,openat,unlink,unlinkat,flock,close,pwrite64,ftruncate,write"
_LINE = re.compile(r"^(?P<pid>\d+)\s+(?P<call>\w+)\((?P<args>.*?)(?:\)\s+=\s+(?P<ret>.*)| <unfinished \.\.\.>)$")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_FD = re.compile(r"^(\d+)<(.*?)>")


def child_durable_trace(p: dict) -> None:
    """A durable roll, a claim, a hand-back and a delete, with a marker written after each returns."""
    folder, marker = p["folder"], os.open(p["marker"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    producer = Enqueuer(folder, durable=True, max_batch_delay=3600, chunk_size=4)
    producer.put_many([{"id": i} for i in range(10)])
    producer.flush()
    os.write(marker, b"flushed\n")
    producer.close()
    consumer = Dequeuer(folder, durable=True, ack_every=1, recover_every=3600)
    got = [consumer.get(timeout=10)["id"] for _ in range(6)]
    os.write(marker, b"got\n")
    consumer.close()  # hands the rest back: records the position, renames to ready_
    os.write(marker, b"closed\n")
    consumer = Dequeuer(folder, durable=True, ack_every=1, recover_every=3600)
    got += [item["id"] for item in consumer.get_many(100, timeout=10)]
    try:
        consumer.get(block=False)  # every item acknowledged: the batch is deleted
    except queue.Empty:
        pass
    os.write(marker, b"drained\n")
    consumer.close()
    if got != list(range(10)):
        raise SystemExit(f"got {got}")


@dataclass
class Call:
    index: int
    pid: int
    call: str
    fd: Optional[int]
    fd_path: str
    paths: List[str]
    args: str
    ret: str


def parse_trace(text: str) -> List[Call]:
    calls: List[Call] = []
    for line in text.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue  # a "resumed" line, a signal, an exit
        args = match["args"]
        fd_match = _FD.match(args)
        calls.append(Call(len(calls), int(match["pid"]), match["call"], int(fd_match[1]) if fd_match else None,
                          fd_match[2] if fd_match else "", _QUOTED.findall(args), args, match["ret"] or ""))
    return calls


def _batch_of(path: str) -> Tuple[Optional[str], Optional[str], bool]:
    """(uid, state, is_journal) of a batch file path, the hidden creating file counting as loading."""
    name = os.path.basename(path.replace(" (deleted)", ""))
    journal = name.endswith(JOURNAL_SUFFIXES)
    if journal:
        name = name.rsplit("-", 1)[0]
    if name.startswith(_folder.CREATING):
        name = _folder.LOADING + "_" + name[len(_folder.CREATING):]
    parsed = _folder.parse_name(name)
    return (parsed.uid, parsed.state, journal) if parsed else (None, None, journal)


def check_durable_trace(calls: List[Call], folder: str, marker: str) -> Tuple[List[str], List[str]]:
    """The rules durable=True relies on, checked on the recorded system calls; (violations, summary).

    A crash can come between any two calls, and after power loss only what was fsynced is sure
    to be there. So at every point of the sequence: a ready_ name never exists for a file with
    writes not yet fsynced, or with a journal beside it (R1); a claim takes the flock before its
    rename; the rename that publishes a batch or hands it back, and the unlink that deletes one,
    are followed by an fsync of the folder before the call that made them returns (the marker
    the program writes after each call); the flock is released only after SQLite closed the file
    (R4). ``summary`` is the sequence for the first batch, for a person to read.
    """
    problems: List[str] = []
    dirty: Dict[str, bool] = collections.defaultdict(bool)
    journal: Dict[str, bool] = collections.defaultdict(bool)
    locks: Dict[Tuple[int, int], str] = {}  # (pid, fd) -> uid of a batch locked with flock
    sqlite_fds: Dict[Tuple[int, int], str] = {}  # (pid, fd) -> uid, descriptors SQLite opened
    pending: List[Tuple[int, str]] = []  # changes waiting for an fsync of the folder
    summary: List[str] = []
    first: Optional[str] = None

    def note(text: str) -> None:
        if summary and summary[-1].split(" x")[0] == text:
            head, _, times = summary[-1].partition(" x")
            summary[-1] = f"{head} x{int(times or 1) + 1}"
        else:
            summary.append(text)

    for call in calls:
        target = call.fd_path or (call.paths[0] if call.paths else "")
        uid, state, is_journal = _batch_of(target)
        hidden = os.path.basename(target).startswith(_folder.CREATING)
        label = (".creating_" if hidden else f"{state}_") + ("-journal" if is_journal else "")
        if call.call == "write" and call.fd_path == marker:
            returned = call.paths[0].replace("\\n", "") if call.paths else "?"
            for index, what in pending:
                problems.append(f"{what} (call {index}) had no fsync of the folder before the call returned ({returned})")
            pending = []
            note(f"<{returned} returns>")
            continue
        if call.call in ("fsync", "fdatasync") and call.fd_path.rstrip("/") == folder:
            pending = []
            note(f"{call.call}(folder)")
            continue
        if uid is None:
            continue
        if first is None:
            first = uid
        mine = uid == first
        if call.call in ("pwrite64", "ftruncate"):
            if not is_journal:
                dirty[uid] = True
            if mine:
                note(f"{call.call}({label})")
        elif call.call in ("fsync", "fdatasync"):
            if not is_journal:
                dirty[uid] = False
            if mine:
                note(f"{call.call}({label})")
        elif call.call == "openat" and re.match(r"\d+", call.ret):
            fd = int(re.match(r"\d+", call.ret)[0])
            if is_journal:
                if "O_CREAT" in call.args:
                    journal[uid] = True
                    if state == _folder.READY:
                        problems.append(f"call {call.index}: a journal was created beside a ready_ file")
                    if mine:
                        note(f"openat({label}, O_CREAT)")
            elif "O_EXCL" not in call.args and "O_NONBLOCK" not in call.args:  # not the protocol's own opens
                sqlite_fds[(call.pid, fd)] = uid
        elif call.call in ("unlink", "unlinkat"):
            if is_journal:
                journal[uid] = False
            else:
                pending.append((call.index, f"the unlink of {os.path.basename(target)}"))
            if mine:
                note(f"unlink({label})")
        elif call.call.startswith("rename") and len(call.paths) >= 2:
            _, new_state, _ = _batch_of(call.paths[1])
            if new_state == _folder.READY:
                if dirty[uid]:
                    problems.append(f"call {call.index}: {os.path.basename(call.paths[1])} was published with writes "
                                    f"not yet fsynced: after power loss the ready_ file may not be whole")
                if journal[uid]:
                    problems.append(f"call {call.index}: {os.path.basename(call.paths[1])} was published with a "
                                    f"journal beside it (R1)")
            if new_state == _folder.CHOSEN and not any(u == uid and pid == call.pid for (pid, _), u in locks.items()):
                problems.append(f"call {call.index}: a claim renamed {uid} before taking its flock")
            if new_state in (_folder.READY, _folder.BAD) and not hidden:
                pending.append((call.index, f"the rename to {os.path.basename(call.paths[1])}"))
            if mine:
                note(f"rename({label} -> {new_state}_)")
        elif call.call == "flock" and "LOCK_EX" in call.args and call.ret.strip() == "0" and call.fd is not None:
            locks[(call.pid, call.fd)] = uid
            if mine:
                note(f"flock({label}, LOCK_EX)")
        elif call.call == "close" and call.fd is not None:
            key = (call.pid, call.fd)
            if key in locks:
                held = locks.pop(key)
                if any(u == held and pid == call.pid for (pid, _), u in sqlite_fds.items()):
                    problems.append(f"call {call.index}: the flock of {held} was released while SQLite still had the "
                                    f"file open (R4: close the lock descriptor last)")
                if mine:
                    note(f"close({label} lock)")
            elif key in sqlite_fds:
                sqlite_fds.pop(key)
                if mine:
                    note(f"close({label} SQLite)")
    return problems, summary


def scenario_durable(ctx: "Context", result: Result) -> None:
    """13. durable=True, recorded for real with strace: each roll fsyncs the file before the rename
    and the folder after it; a claim locks before it renames; a hand-back and a delete fsync the
    folder before they return; at no point does a ready_ name point at unsynced data or a journal."""
    strace = require_strace()
    for run in range(ctx.runs(10, 2, 40)):
        folder = fresh_folder(ctx.root)
        marker = os.path.join(ctx.root, f"marker{run}")
        out = os.path.join(ctx.root, f"trace{run}.txt")
        proc = subprocess.run([strace, "-f", "-qq", "-y", "-s", "64", "-o", out, "-e", "trace=" + TRACED]
                              + child_argv("durable_trace", folder=folder, marker=marker),
                              capture_output=True, text=True, timeout=DEADLINE)
        result.runs += 1
        result.items += 10
        if proc.returncode != 0:
            result.fail(f"run {run}: the traced program failed: {proc.stderr[-600:]}")
            continue
        with open(out) as f:
            calls = parse_trace(f.read())
        problems, summary = check_durable_trace(calls, os.path.realpath(folder), os.path.realpath(marker))
        for problem in problems:
            result.fail(f"run {run}: {problem}")
        renames = [c for c in calls if c.call.startswith("rename") and any("ready_" in p for p in c.paths[1:2])]
        dir_syncs = [c for c in calls if c.call == "fsync" and c.fd_path.rstrip("/") == os.path.realpath(folder)]
        if len(renames) < 2 or len(dir_syncs) < 3:
            result.fail(f"run {run}: the trace shows {len(renames)} renames to ready_ and {len(dir_syncs)} folder "
                        f"fsyncs: the check proved nothing")
        if run == 0:
            result.notes.append("recorded for the first batch: " + ", ".join(summary))
        if os.listdir(folder):
            result.fail(f"run {run}: left: {os.listdir(folder)}")
        remove_tree(folder)
        os.unlink(out)
        os.unlink(marker)


# -- running -------------------------------------------------------------------------------------------------


@dataclass
class Context:
    """What a scenario gets: a work folder, its random generator, and how big a run to make."""

    root: str
    rng: random.Random
    profile: str = "medium"
    run_count: Optional[int] = None
    soak_items: Optional[int] = None
    soak_kill_every: Optional[Tuple[float, float]] = None

    def pick(self, medium, quick, long):
        return {"quick": quick, "medium": medium, "long": long}[self.profile]

    def runs(self, medium: int, quick: int, long: int) -> int:
        return self.run_count or self.pick(medium, quick, long)


SCENARIOS: Dict[str, Tuple[str, Callable[[Context, Result], None]]] = {
    "producer_kill": ("1. producer SIGKILL, random moment", scenario_producer_random_kill),
    "producer_syscall_kill": ("1. producer SIGKILL at a syscall (commit, roll, rename)", scenario_producer_syscall_kill),
    "consumer_kill": ("2. consumer SIGKILL, random moment", scenario_consumer_random_kill),
    "consumer_syscall_kill": ("2. consumer SIGKILL at a syscall (claim, ack, hand-back, delete)",
                              scenario_consumer_syscall_kill),
    "recovery_kill": ("3. recover() SIGKILL mid-work", scenario_recovery_kill),
    "recover_loop": ("4. recover() looping beside live processes", scenario_recover_loop),
    "transaction_kill": ("5. producer SIGKILL inside a spilled transaction",
                         lambda ctx, result: scenario_producer_syscall_kill(ctx, result, big=True)),
    "disk_full": ("6. disk full (small tmpfs: blocks, inodes)", scenario_disk_full),
    "failed_writes": ("6. failed writes injected (ENOSPC, EIO)", scenario_failed_writes),
    "damaged": ("7. damaged ready_ files", scenario_damaged),
    "foreign": ("8. foreign entries in the folder", scenario_foreign),
    "fork": ("9. fork: dead parent, inherited queues, os.fork", scenario_fork),
    "poison": ("10. poison items", scenario_poison),
    "poison_crash": ("10. a poison item that kills its consumer", scenario_poison_crash),
    "permissions": ("11. permissions: read-only, shared by a group", scenario_permissions),
    "soak": ("12. soak with random kills", scenario_soak),
    "durable": ("13. durable: system call order (strace)", scenario_durable),
}

CHILDREN.update({
    "foreign_consume": child_foreign_consume, "fork_parent_dies": child_fork_parent_dies,
    "fork_inherit": child_fork_inherit, "fork_queue": child_fork_queue, "poison_produce": child_poison_produce,
    "durable_trace": child_durable_trace,
})


def run_scenario(name: str, *, profile: str = "medium", seed: Optional[int] = None, root: Optional[str] = None,
                 runs: Optional[int] = None, soak_items: Optional[int] = None,
                 soak_kill_every: Optional[Tuple[float, float]] = None, keep: bool = False) -> Result:
    """Run one scenario and return its Result (tests call this with ``profile="quick"``)."""
    title, function = SCENARIOS[name]
    seed = random.randrange(2**32) if seed is None else seed
    result = Result(title, seed=seed)
    own_root = root is None
    root = tempfile.mkdtemp(prefix="turbo_queue-chaos-") if own_root else tempfile.mkdtemp(prefix=name + "-", dir=root)
    ctx = Context(root, random.Random(f"{seed}-{name}"), profile, runs, soak_items, soak_kill_every)
    started = time.monotonic()
    try:
        function(ctx, result)
    except Unavailable as exc:
        result.unavailable = str(exc)
    except Exception as exc:  # a scenario that breaks is a finding too: report it, go on with the others
        import traceback
        result.fail(f"the scenario itself failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()[-1500:]}")
    finally:
        result.seconds = time.monotonic() - started
        if not keep:
            remove_tree(root)
    return result


def table(results: List[Result]) -> str:
    rows = ["| scenario | runs | items | lost | duplicated | unexpected | bad files | integrity failures | result |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        verdict = ("not run: " + r.unavailable) if r.unavailable else ("ok" if r.ok else f"FAIL ({r.failure_count})")
        rows.append(f"| {r.scenario} | {r.runs:,} | {r.items:,} | {r.lost:,} | {r.duplicated:,} | {r.unexpected:,} | "
                    f"{r.bad_files:,} | {r.integrity_failures:,} | {verdict} |")
    return "\n".join(rows)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        logging.basicConfig(level=logging.WARNING)
        CHILDREN[argv[1]](json.loads(argv[2]))
        return 0
    parser = argparse.ArgumentParser(
        prog="chaos.py", description=__doc__.split("\n\n")[0],
        epilog="scenarios: " + ", ".join(SCENARIOS) + ".\nExample: python tools/chaos.py --only consumer_syscall_kill,soak "
               "--runs 500", formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", const="quick", dest="profile", help="the short runs CI does")
    size.add_argument("--long", action="store_const", const="long", dest="profile",
                      help="hundreds of runs per scenario and a soak of ten million items")
    parser.add_argument("--only", default="", help="comma-separated scenario names (default: all)")
    parser.add_argument("--runs", type=int, help="runs per scenario, instead of the profile's")
    parser.add_argument("--soak-items", type=int, help="items the soak hands over (default 1,000,000)")
    parser.add_argument("--soak-kill-every", type=float, nargs=2, metavar=("MIN", "MAX"),
                        help="seconds between two kills in the soak, drawn between MIN and MAX")
    parser.add_argument("--seed", type=int, help="replay a run (each scenario prints its seed)")
    parser.add_argument("--workdir", help="where the queue folders go (default: the temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folders")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("-v", "--verbose", action="store_true", help="show turbo_queue's log and progress")
    parser.add_argument("-q", "--quiet", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    profile = args.profile or "medium"
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
    logger = logging.getLogger("turbo_queue")
    if args.verbose:
        logging.basicConfig(level=logging.INFO)
    else:
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
    seed = random.randrange(2**32) if args.seed is None else args.seed
    results: List[Result] = []
    try:
        for name in names:
            if not args.quiet:
                print(f"{SCENARIOS[name][0]} ... ", end="", file=sys.stderr, flush=True)
            result = run_scenario(name, profile=profile, seed=seed, root=args.workdir, runs=args.runs,
                                  soak_items=args.soak_items,
                                  soak_kill_every=tuple(args.soak_kill_every) if args.soak_kill_every else None,
                                  keep=args.keep)
            results.append(result)
            if not args.quiet:
                state = "not run" if result.unavailable else ("ok" if result.ok else "FAIL")
                print(f"{state} ({result.runs} runs, {result.seconds:.0f} s)", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        print(f"turbo_queue chaos, profile {profile}, seed {seed}\n")
        print(table(results))
        notes = [(r.scenario, n) for r in results for n in r.notes]
        if notes:
            print()
            for scenario, text in notes:
                print(f"- {scenario}: {text}")
        for r in results:
            for failure in r.failures:
                print(f"\nFAIL {r.scenario}: {failure}")
            if r.unavailable:
                print(f"\nNOT RUN {r.scenario}: {r.unavailable}")
    if any(not r.ok and not r.unavailable for r in results):
        return 1
    return 2 if any(r.unavailable for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
