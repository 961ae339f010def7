"""Helpers for the pipeline's tests: a real ``turbo-queue pipeline`` command, its children, its output topic."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from tests.support.supervised import descendants, running, wait_for

ROOT = Path(__file__).resolve().parent.parent.parent


class PipelineProcess:
    """``turbo-queue pipeline ... FUNCTION`` in a session of its own, its log in a file."""

    def __init__(self, bootstrap: str, source: str, target: str, group: str, function: str, *args: str,
                 log_dir: str, workers: int = 3) -> None:
        command = [sys.executable, "-m", "turbo_queue", "pipeline", "-v", "--bootstrap-servers", bootstrap,
                   "--from", source, "--to", target, "--group", group, "--workers", str(workers),
                   "-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500", *args, function]
        self.log_path = Path(log_dir) / f"pipeline-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(ROOT), env=env,
                                        start_new_session=True)
        self.pid = self.process.pid
        self.seen: List[int] = []  # every child pid seen

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> Dict[str, int]:
        """The running children by name (``source-0``, ``worker-2``, ``sink-0``), from their process names."""
        out = {}
        for pid in descendants(self.pid):
            try:
                with open(f"/proc/{pid}/comm") as f:
                    name = f.read().strip()
            except FileNotFoundError:
                continue
            if re.fullmatch(r"(source|worker|sink|dead-letter-sin)-\d+", name):
                out[name] = pid
                if pid not in self.seen:
                    self.seen.append(pid)
        return out

    def wait_for_children(self, names: Sequence[str], timeout: float = 60) -> Dict[str, int]:
        def all_there() -> Dict[str, int]:
            kids = self.children()
            return kids if all(n in kids for n in names) else {}

        return wait_for(all_there, timeout, f"children {names} running")

    def folder(self) -> str:
        """The pipeline's folder, as its log names it."""
        match = wait_for(lambda: re.search(r"-> (\S+)/in -> ", self.log()), 60, "the folder in the log")
        return match.group(1)

    def kill_child(self, name: str, timeout: float = 60) -> int:
        """SIGKILL the child ``name``; wait until another takes its place; the new pid."""
        old = self.wait_for_children([name])[name]
        os.kill(old, signal.SIGKILL)

        def replaced() -> Optional[int]:
            pid = self.children().get(name)
            return pid if pid not in (None, old) else None

        return wait_for(replaced, timeout, f"{name} started again")

    def terminate(self, timeout: float = 120) -> int:
        """SIGTERM, then the exit status; every child seen is gone by then."""
        self.children()
        os.kill(self.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def kill_all(self) -> None:
        """As when the machine dies: freeze the supervisor and every child, then SIGKILL them all."""
        every = [self.pid] + descendants(self.pid)
        for pid in every:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        every = [self.pid] + descendants(self.pid)
        for pid in every:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(30)
        wait_for(lambda: not [pid for pid in every if running(pid)], 30, "every process gone")
        self._log.close()

    def left_running(self) -> List[int]:
        return [pid for pid in self.seen if running(pid)]

    def close(self) -> None:
        """Kill what still runs; print the log (pytest shows it when the test failed)."""
        if self.process.poll() is None:
            self.kill_all()
        print(f"--- {self.log_path.name}\n{self.log()[-20000:]}")


def output_by_input(records: Sequence[object]) -> Dict[bytes, int]:
    """How often each output value arrived."""
    counts: Dict[bytes, int] = {}
    for record in records:
        value = record.value()  # type: ignore[attr-defined]
        counts[value] = counts.get(value, 0) + 1
    return counts


def status_partitions(folder: str) -> Optional[List[int]]:
    """The partitions the pipeline's source(s) hold, from their status files."""
    from turbo_queue.kafka.status import read_statuses

    statuses = [s for s in read_statuses(os.path.join(folder, "in")) if s.get("kind") == "source"]
    if not statuses:
        return None
    return sorted(p["partition"] for s in statuses for p in s.get("partitions", []))
