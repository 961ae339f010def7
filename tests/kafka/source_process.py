"""Helpers for the source's tests: real ``turbo-queue kafka-source`` processes and what they left."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import orjson

from turbo_queue import Dequeuer
from turbo_queue.kafka import Message
from turbo_queue.monitor import read_items


class SourceProcess:
    """A ``turbo-queue kafka-source`` command running in a process of its own."""

    def __init__(self, folder: str, bootstrap: str, topics: Iterable[str], group: str, *args: str,
                 log_dir: Optional[str] = None) -> None:
        self.folder = folder
        command = [sys.executable, "-m", "turbo_queue", "kafka-source", "-v", folder, "--bootstrap-servers", bootstrap,
                   "--group", group]
        for topic in topics:
            command += ["--topic", topic]
        command += list(args)
        log_dir = log_dir or os.path.dirname(folder)
        self.log_path = Path(log_dir) / f"source-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        self.pid = self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float = 60) -> int:
        try:
            code = self.process.wait(timeout)
        finally:
            self._log.close()
        return code

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, then wait for the exit code."""
        self.process.terminate()
        return self.wait(timeout)

    def kill(self) -> None:
        self.process.kill()
        self.wait()

    def running(self) -> bool:
        return self.process.poll() is None

    def rss_kb(self) -> int:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError(f"no VmRSS for pid {self.pid}")

    def __enter__(self) -> "SourceProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.running():
            self.kill()


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> object:
    """Wait until ``condition()`` is true and return it; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(interval)


def numbered(start: int, stop: int, size: int = 0) -> List[Tuple[bytes, bytes, List[Tuple[str, bytes]]]]:
    """Records ``start``..``stop - 1``: key ``k<n>``, a JSON value ``{"n": n}`` (padded to ``size``), a header."""
    pad = "x" * size
    return [(f"k{n}".encode(), orjson.dumps({"n": n, "pad": pad}), [("n", str(n).encode()), ("empty", None)])
            for n in range(start, stop)]


def ready_messages(folder: str) -> List[Message]:
    """Every item of the folder's ``ready_`` batches (handed over, not yet claimed), read without a lock."""
    found: List[Message] = []
    for name in sorted(os.listdir(folder)):
        if name.startswith("ready_"):
            found.extend(read_items(os.path.join(folder, name), 10**9)[1])  # type: ignore[arg-type]
    return found


def drain(folder: str, count: int, timeout: float = 60, into: Optional[List[Message]] = None) -> List[Message]:
    """Take items from ``folder`` until ``count`` have come (or ``timeout`` passed); returns them."""
    got: List[Message] = [] if into is None else into
    deadline = time.monotonic() + timeout
    with Dequeuer(folder, recover_every=1.0) as dequeuer:
        while len(got) < count and time.monotonic() < deadline:
            try:
                got.extend(dequeuer.get_many(1000, timeout=0.2))
            except queue.Empty:
                continue
    return got


def by_position(messages: Iterable[Message]) -> Dict[Tuple[str, int, int], int]:
    """How often each (topic, partition, offset) came."""
    seen: Dict[Tuple[str, int, int], int] = {}
    for m in messages:
        where = (m.topic, m.partition, m.offset)
        seen[where] = seen.get(where, 0) + 1
    return seen
