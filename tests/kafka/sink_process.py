"""Helpers for the sink's tests: real ``turbo-queue kafka-sink`` processes, and items to give them."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Counter, Iterable, List, Optional

from turbo_queue import Enqueuer
from turbo_queue.kafka import Message


class SinkProcess:
    """A ``turbo-queue kafka-sink`` command running in a process of its own."""

    def __init__(self, folder: str, bootstrap: str, topic: str, *args: str, log_dir: Optional[str] = None) -> None:
        self.folder = folder
        command = [sys.executable, "-m", "turbo_queue", "kafka-sink", "-v", folder, "--bootstrap-servers", bootstrap,
                   "--topic", topic, *args]
        self.log_path = Path(log_dir or os.path.dirname(folder)) / f"sink-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        self.pid = self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, then wait for the exit code."""
        self.process.terminate()
        return self.wait(timeout)

    def kill(self) -> None:
        self.process.kill()
        self.wait()

    def running(self) -> bool:
        return self.process.poll() is None

    def __enter__(self) -> "SinkProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.running():
            self.kill()


def messages(start: int, stop: int, size: int = 0) -> List[Message]:
    """Messages ``start``..``stop - 1`` as a source would put them: key ``k<n>``, value ``v<n>``
    (padded to ``size`` bytes), two headers (one without a value) and a timestamp."""
    return [Message(f"v{n}".encode().ljust(size, b"."), f"k{n}".encode(), [("n", str(n).encode()), ("empty", None)],
                    1_700_000_000_000 + n, "topic-a", n % 4, n)
            for n in range(start, stop)]


def put(folder: str, items: Iterable[object], **settings: object) -> None:
    """Hand ``items`` over to ``folder`` (pickle codec)."""
    with Enqueuer(folder, **settings) as producer:  # type: ignore[arg-type]
        producer.put_many(list(items))


def numbers_in(records: Iterable[object]) -> Counter[int]:
    """How often each message number came, from Kafka records whose key is ``k<n>``."""
    return collections.Counter(int(record.key()[1:]) for record in records)  # type: ignore[attr-defined]
