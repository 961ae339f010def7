"""Child processes of a scenario: forked ones, separate programs (``python tools/chaos.py _child
ROLE PARAMS``, which strace can run), their reports, and kills at a system call with strace.

Each child reports what it was handed (a producer: what was handed over; a consumer: which items
it got) with one os.write per report, so a SIGKILL loses at most the report being written, never
one that was written.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

T = TypeVar("T")

MP = multiprocessing.get_context("fork")
DEADLINE = 60.0  # for any one thing a run waits for; a hang fails the run instead of stalling it
#: The command line entry, which runs a child role as a separate program.
CHAOS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "chaos.py")

#: The roles a separate child program can play, by name: each module of a scenario family adds its own.
CHILDREN: Dict[str, Callable[[dict], None]] = {}


class Unavailable(Exception):
    """A scenario cannot run on this machine (a tool or a privilege is missing); says how to fix it."""


def child(name: str) -> Callable[[Callable[[dict], None]], Callable[[dict], None]]:
    """Register a function as the child role ``name`` (see :func:`child_argv`)."""
    def register(function: Callable[[dict], None]) -> Callable[[dict], None]:
        CHILDREN[name] = function
        return function
    return register


def wait_for(predicate: Callable[[], T], what: str, proc=None, deadline: float = DEADLINE,
             interval: float = 0.001) -> T:
    """``predicate()``'s first true value; AssertionError after ``deadline`` seconds, or if ``proc``
    (a child process) died first. Looks again every ``interval`` seconds."""
    end = time.monotonic() + deadline
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and not proc.is_alive() and not predicate():
            raise AssertionError(f"child exited ({proc.exitcode}) before {what}")
        if time.monotonic() > end:
            raise AssertionError(f"no {what} within {deadline}s")
        time.sleep(interval)


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


def write_report(fd: int, line: bytes) -> None:
    """One report, in one ``writev``: not a ``write``, so that an error injected into the N-th
    ``write`` (the one that puts a batch made in memory in place) hits the library, not the report."""
    os.writev(fd, [line])


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


@child("noop")
def child_noop(p: dict) -> None:
    """Start up as the other children do, up to their work: the baseline of KillPoints."""
    os.close(open_report(os.devnull))
