"""turbo_queue: a file-batched, crash-safe replacement for ``multiprocessing.Queue``.

A queue is a folder; producers write batches of items into SQLite files of their own and
consumers claim whole files by renaming them, so processes never wait on each other item by item.
"""

from __future__ import annotations

from queue import Empty, Full
from typing import Any

from ._errors import (
    BatchFormatError,
    BatchWriteError,
    NetworkFilesystemError,
    ShardFormatError,
    TurboQueueError,
    UnsupportedPlatformError,
)
from ._aside import set_aside
from .consumer import Dequeuer
from .legacy import Dequeue, Enqueue, MultiTask, Startup, TaskGroup, dequeue, enqueue, startup
from .producer import Enqueuer
from .queues import JoinableQueue, Queue, SimpleQueue
from .recovery import RecoveryReport, recover
from .supervisor import Supervisor

__version__ = "1.0.0.dev0"

__all__ = [
    "BatchFormatError",
    "BatchWriteError",
    "Dequeue",
    "Dequeuer",
    "Empty",
    "Enqueue",
    "Enqueuer",
    "Full",
    "JoinableQueue",
    "KafkaDequeue",
    "KafkaEnqueue",
    "MultiTask",
    "NetworkFilesystemError",
    "Queue",
    "RecoveryReport",
    "ShardFormatError",
    "SimpleQueue",
    "Startup",
    "Supervisor",
    "TaskGroup",
    "TurboQueueError",
    "UnsupportedPlatformError",
    "dequeue",
    "enqueue",
    "recover",
    "set_aside",
    "startup",
]


def __getattr__(name: str) -> Any:
    """0.8.0's ``KafkaEnqueue`` and ``KafkaDequeue``, imported when first asked for (they need the Kafka code)."""
    if name in ("KafkaEnqueue", "KafkaDequeue"):
        from .legacy import kafka

        return getattr(kafka, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
