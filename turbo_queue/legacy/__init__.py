"""The APIs of the earlier turbo-queue releases, kept working on top of the current core.

``startup``, ``enqueue`` and ``dequeue`` are turbo-queue 0.5.2's; ``Startup``, ``Enqueue`` and
``Dequeue`` are 0.8.0's. New code should use ``Enqueuer``/``Dequeuer`` or ``Queue``.
"""

from __future__ import annotations

from .core import Dequeue, Enqueue, Startup, dequeue, enqueue, startup

__all__ = ["Dequeue", "Enqueue", "Startup", "dequeue", "enqueue", "startup"]
