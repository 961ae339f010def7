"""The APIs of the earlier turbo-queue releases, kept working on top of the current core.

``startup``, ``enqueue`` and ``dequeue`` are turbo-queue 0.5.2's; ``Startup``, ``Enqueue``,
``Dequeue``, ``MultiTask`` and ``TaskGroup`` are 0.8.0's, and so are ``KafkaEnqueue`` and
``KafkaDequeue`` (in ``legacy.kafka``, imported by ``turbo_queue`` when first asked for). New code should use
``Enqueuer``/``Dequeuer`` or ``Queue``, and ``Supervisor``.
"""

from __future__ import annotations

from .core import Dequeue, Enqueue, Startup, dequeue, enqueue, startup
from .tasks import MultiTask, TaskGroup

__all__ = ["Dequeue", "Enqueue", "MultiTask", "Startup", "TaskGroup", "dequeue", "enqueue", "startup"]
