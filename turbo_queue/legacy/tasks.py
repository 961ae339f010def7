"""turbo-queue 0.8.0's ``MultiTask`` and ``TaskGroup``, kept for code written against them, on ``Supervisor``.

The settings are plain attributes, set after construction, as in 0.8.0::

    group = TaskGroup()
    group.function_to_call = work
    group.kwargs = {"folder": "/var/queues/events"}
    group.process_count = 4
    tasks = MultiTask()
    tasks.add_task(group)
    tasks.start_all()        # runs until SIGTERM, SIGINT (Ctrl-C) or SIGTSTP (Ctrl-Z), then exits 0

What changed from 0.8.0: a child that dies (an exception, a signal, a non-zero exit status) is
started again, with the same ``process_id``, after a backoff; the stop on SIGTERM/SIGINT/SIGTSTP
sends each child SIGTERM and waits for it (SIGKILL after 10 s), so no child is left running; a
child that returns (status 0) is finished, and ``start_all()`` returns once every child has
finished (0.8.0 waited forever). 0.8.0's log file ``./test_multi.log`` is not written: messages go
to the ``turbo_queue`` logger. New code should use ``turbo_queue.supervisor.Supervisor``.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any, Callable, Dict, List, Optional

from ..supervisor import Supervisor

#: How long a child has after SIGTERM before it is killed (0.8.0's terminate() waited forever).
STOP_TIMEOUT = 10.0


class TaskGroup:
    """``process_count`` processes that each run ``function_to_call(**kwargs, process_id=n)``.

    ``n`` runs from ``process_number_start`` to ``process_number_start + process_count - 1``.
    ``include_task_number`` is kept for 0.8.0's callers and, as there, changes nothing: the
    ``process_id`` keyword is always passed. ``daemon`` (True by default, as 0.8.0 always did)
    makes children that may not start processes of their own.
    """

    def __init__(self) -> None:
        self.function_to_call: Optional[Callable[..., Any]] = None
        self.kwargs: Dict[str, Any] = {}
        self.daemon = True
        self.include_task_number = True
        self.process_count = 1
        self.process_number_start = 11

    def _check(self) -> None:
        """ValueError naming the first setting that is wrong."""
        if not callable(self.function_to_call):
            raise ValueError(f"TaskGroup.function_to_call must be a function, got {self.function_to_call!r}")
        if not isinstance(self.kwargs, dict) or not all(isinstance(key, str) for key in self.kwargs):
            raise ValueError(f"TaskGroup.kwargs must be a dict of keyword arguments, got {self.kwargs!r}")
        for name in ("process_count", "process_number_start"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TaskGroup.{name} must be a non-negative integer, got {value!r}")


class MultiTask:
    """Starts the processes of every ``TaskGroup`` added, keeps them running, and stops them on a signal."""

    def __init__(self) -> None:
        self.task_group_list: List[TaskGroup] = []
        self._supervisor: Optional[Supervisor] = None

    def add_task(self, task: TaskGroup) -> None:
        """Add a group; one without ``function_to_call`` is ignored, as in 0.8.0."""
        if task.function_to_call:
            self.task_group_list.append(task)

    def start_all(self) -> None:
        """Start every group's processes and supervise them.

        On SIGTERM, SIGINT or SIGTSTP, every child is stopped and the program exits with status 0
        (``SystemExit(0)``, as 0.8.0 did). Returns when every child has finished on its own.
        ``ValueError`` for a group with a wrong setting, before any process starts.
        """
        for group in self.task_group_list:
            group._check()
        supervisor = Supervisor()
        for number, group in enumerate(self.task_group_list):
            function = group.function_to_call
            assert function is not None
            supervisor.add_group(
                f"{getattr(function, '__name__', 'task')}.{number}", function, group.process_count,
                kwargs=dict(group.kwargs), restart="on-failure", stop_timeout=STOP_TIMEOUT,
                daemon=bool(group.daemon), index_kwarg="process_id", first_index=group.process_number_start,
            )
        self._supervisor = supervisor
        previous = None
        if threading.current_thread() is threading.main_thread():  # 0.8.0 stopped on Ctrl-Z too
            previous = signal.signal(signal.SIGTSTP, lambda signum, frame: supervisor.stop())
        try:
            supervisor.run()
        finally:
            if previous is not None:
                signal.signal(signal.SIGTSTP, previous)
        if supervisor.stopping:
            sys.exit(0)

    def stop(self) -> None:
        """Stop every child (from another thread): ``start_all()`` then exits with status 0."""
        if self._supervisor is not None:
            self._supervisor.stop()


__all__ = ["MultiTask", "TaskGroup"]
