"""What happens to open producers and consumers at process exit and after fork.

At exit (``atexit`` in a main program, ``multiprocessing.util.Finalize`` in a ``multiprocessing``
child, which skips ``atexit``) every open Enqueuer flushes its partial batch and every open
Dequeuer hands back what it has not returned. In a forked child, inherited ones forget the
parent's buffers, files and locks, so nothing is flushed twice or held by the wrong process.
"""

from __future__ import annotations

import logging
import multiprocessing.util
import os
from typing import Any, List, Protocol, Set

log = logging.getLogger("turbo_queue")


class Closable(Protocol):
    def _close_at_exit(self) -> None: ...

    def _forget_after_fork(self) -> None: ...


#: Open producers and consumers. Held strongly: one dropped without close() still flushes or
#: hands back at exit, instead of leaving its files to recovery.
_open: Set[Any] = set()
_hook: Any = None
_hook_pid = 0
#: SQLite connections inherited from a parent: kept, never closed or used, so that closing them
#: cannot touch the parent's files (R5).
_inherited: List[Any] = []


def track(obj: Closable) -> None:
    """Close ``obj`` at exit if its owner has not, and reset it in forked children."""
    _open.add(obj)
    ensure_exit_hook()


def untrack(obj: Closable) -> None:
    """``obj`` was closed: nothing is left to do for it at exit."""
    _open.discard(obj)


def ensure_exit_hook() -> None:
    """Register the exit hook in this process, once.

    Called whenever a batch begins: a ``multiprocessing`` child clears the registry after it
    unpickles its arguments, and a finalizer inherited through fork ignores the child.
    The check is a pid comparison and a dict look-up.
    """
    global _hook, _hook_pid
    pid = os.getpid()
    if _hook is None or _hook_pid != pid or not _hook.still_active():
        _hook = multiprocessing.util.Finalize(None, _close_all, exitpriority=100)
        _hook_pid = pid


def keep_inherited(resource: Any) -> None:
    _inherited.append(resource)


def _close_all() -> None:
    for obj in list(_open):
        try:
            obj._close_at_exit()
        except FileNotFoundError as exc:  # its folder was removed under it: nothing there to keep
            log.warning("turbo_queue: closing %r at exit: %s is gone (was the folder removed?); "
                        "what it held there is lost", obj, exc.filename)
        except Exception:  # one failing queue must not keep the others from flushing
            log.exception("turbo_queue: closing %r at exit failed", obj)


def _after_fork() -> None:
    for obj in list(_open):
        obj._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork)
