"""The APIs of the earlier turbo-queue releases, kept working on top of the current core.

``startup``, ``enqueue`` and ``dequeue`` are turbo-queue 0.5.2's; ``MultiTask`` and ``TaskGroup``
are 0.8.0's. New code should use ``Enqueuer``/``Dequeuer`` or ``Queue``, and ``Supervisor``.
"""

from __future__ import annotations

from .core import dequeue, enqueue, startup
from .tasks import MultiTask, TaskGroup

__all__ = ["MultiTask", "TaskGroup", "dequeue", "enqueue", "startup"]
