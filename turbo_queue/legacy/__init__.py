"""The APIs of the earlier turbo-queue releases, kept working on top of the current core.

``startup``, ``enqueue`` and ``dequeue`` are turbo-queue 0.5.2's. New code should use
``Enqueuer``/``Dequeuer`` or ``Queue``.
"""

from __future__ import annotations

from .core import dequeue, enqueue, startup

__all__ = ["dequeue", "enqueue", "startup"]
