"""``Supervisor``: named groups of child processes, started in stages, restarted when they die.

A pipeline is several kinds of processes (readers, workers, writers) that must all run, and that
must stop in an order: the readers first, so that what they handed over is worked off before the
writers stop. ``Supervisor`` starts each group's children, starts a child again when it dies
(waiting a little longer after each quick death), and on ``stop()`` stops the stages one after
the other, each child with SIGTERM (SIGKILL if it does not stop in time), so that no child is left.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

log = logging.getLogger("turbo_queue")

#: Signals whose handlers ``run()`` installs in the supervisor (and resets in every child).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_PR_SET_PDEATHSIG, _PR_SET_NAME = 1, 15


def describe_exit(exitcode: Optional[int]) -> str:
    """``exitcode`` of a ``multiprocessing`` process in words: "exited with status 1", "was killed by SIGKILL"."""
    if exitcode is None:
        return "is still running"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by {name}"
    return f"exited with status {exitcode}"


@dataclass
class _Group:
    name: str
    target: Callable[..., Any]
    count: int
    args: Tuple[Any, ...]
    kwargs: Dict[str, Any]
    stage: int
    restart: str  # "always": a child that exits is started again, whatever its status; "on-failure": not after status 0
    stop_timeout: float
    drained: Optional[Callable[[], bool]]
    daemon: bool
    index_kwarg: Optional[str]
    first_index: int
    on_death: Optional[Callable[[str, int], object]]


@dataclass
class _Child:
    group: _Group
    index: int
    process: Optional[BaseProcess] = None
    started_at: float = 0.0
    quick_deaths: int = 0  # deaths in a row, each within healthy_after of its start
    restart_at: Optional[float] = None  # when it is due to start again
    finished: bool = False  # exited on its own, with status 0, in an "on-failure" group
    stopping: bool = False  # its stage is being stopped: not started again
    restarts: int = 0

    @property
    def name(self) -> str:
        return f"{self.group.name}-{self.group.first_index + self.index}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.exitcode is None


class Supervisor:
    """Starts named groups of child processes and keeps them running until ``stop()``.

    Groups are started by ascending ``stage`` (the groups of one stage together) and stopped by
    descending stage. A child that dies while its stage runs is started again after a backoff:
    ``min_backoff`` seconds, doubled after each death within ``healthy_after`` seconds of its
    start, at most ``max_backoff``; each death is logged with its exit status or signal.
    ``stop()`` may be called from a signal handler or any thread; ``run()`` then stops the stages
    in order and returns 0. Calling ``stop()`` again while it stops skips the waits for drains.

    Each child starts in a process group of its own (a Ctrl-C on the terminal reaches the
    supervisor only, which stops the children in order), with the default handlers of every
    signal, and receives SIGTERM if the supervisor dies without stopping it.
    """

    def __init__(
        self,
        *,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
        healthy_after: float = 10.0,
        drain_timeout: float = 300.0,
        start_method: str = "fork",
        tick: Optional[Callable[["Supervisor"], None]] = None,
        tick_every: float = 1.0,
    ) -> None:
        for name, value in (("min_backoff", min_backoff), ("max_backoff", max_backoff),
                            ("healthy_after", healthy_after), ("drain_timeout", drain_timeout),
                            ("tick_every", tick_every)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a non-negative number of seconds, got {value!r}")
        if max_backoff < min_backoff:
            raise ValueError(f"max_backoff ({max_backoff}) must not be below min_backoff ({min_backoff})")
        self.min_backoff, self.max_backoff = float(min_backoff), float(max_backoff)
        self.healthy_after, self.drain_timeout = float(healthy_after), float(drain_timeout)
        self._context: Any = multiprocessing.get_context(start_method)
        self._tick, self._tick_every = tick, float(tick_every)
        self._groups: List[_Group] = []
        self._children: List[_Child] = []
        self._stop_requested = False
        self._hurry = False  # a second stop(): do not wait for drains
        self._running = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)
        self._ticked = float("-inf")
        self.restarts = 0

    # -- the public calls ------------------------------------------------------------------

    def add_group(
        self,
        name: str,
        target: Callable[..., Any],
        count: int = 1,
        *,
        args: Sequence[Any] = (),
        kwargs: Optional[Dict[str, Any]] = None,
        stage: int = 0,
        restart: str = "always",
        stop_timeout: float = 10.0,
        drained: Optional[Callable[[], bool]] = None,
        daemon: bool = False,
        index_kwarg: Optional[str] = None,
        first_index: int = 0,
        on_death: Optional[Callable[[str, int], object]] = None,
    ) -> None:
        """Add ``count`` children that each run ``target(*args, **kwargs)``.

        ``restart="always"`` starts a child again whenever it exits, ``"on-failure"`` only when
        it did not exit with status 0 (then it is finished). Before the stage is stopped,
        ``drained()`` (if given) is polled until it is true, at most ``drain_timeout`` seconds,
        while the children keep running. ``stop_timeout``: how long a child has after SIGTERM
        before it gets SIGKILL. With ``index_kwarg``, child i gets ``first_index + i`` as that
        keyword argument. ``on_death(name, exitcode)`` is called in the supervisor after a child of
        the group died (before it is started again), for clean-up such as ``recover()`` of its
        folder. ``ValueError`` for a bad setting or a name already used.
        """
        if self._running:
            raise RuntimeError("add_group() must be called before run()")
        if not name or any(group.name == name for group in self._groups):
            raise ValueError(f"a group needs a name of its own, got {name!r}")
        if not callable(target):
            raise ValueError(f"target of group {name!r} must be callable, got {target!r}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count of group {name!r} must be a non-negative integer, got {count!r}")
        if restart not in ("always", "on-failure"):
            raise ValueError(f"restart must be 'always' or 'on-failure', got {restart!r}")
        if isinstance(stop_timeout, bool) or not isinstance(stop_timeout, (int, float)) or stop_timeout < 0:
            raise ValueError(f"stop_timeout must be a non-negative number of seconds, got {stop_timeout!r}")
        group = _Group(name, target, count, tuple(args), dict(kwargs or {}), int(stage), restart,
                       float(stop_timeout), drained, bool(daemon), index_kwarg, int(first_index), on_death)
        self._groups.append(group)
        self._children.extend(_Child(group, i) for i in range(count))

    def stop(self) -> None:
        """Ask ``run()`` to stop every child in order; safe in a signal handler and from any thread.

        A second call while stopping skips what is left of the waits for drains."""
        if self._stop_requested:
            self._hurry = True
        self._stop_requested = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:  # the pipe is full (run() is awake anyway) or closed (run() has ended)
            pass

    @property
    def stopping(self) -> bool:
        return self._stop_requested

    def pids(self) -> Dict[str, int]:
        """The pid of every running child, by child name (``"<group>-<index>"``)."""
        return {child.name: child.process.pid for child in self._children
                if child.alive and child.process is not None and child.process.pid is not None}

    def run(self, *, handle_signals: bool = True) -> int:
        """Start the groups, supervise them until ``stop()`` (or until every child finished), stop them; 0.

        With ``handle_signals`` (and in the main thread), SIGTERM and SIGINT call ``stop()`` while
        it runs; the previous handlers are put back before it returns.
        """
        if self._running:
            raise RuntimeError("run() is already running")
        self._running = True
        previous: Dict[int, Any] = {}
        if handle_signals and threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                previous[signum] = signal.signal(signum, self._on_signal)
        try:
            for stage in sorted({group.stage for group in self._groups}):
                for child in self._children:
                    if child.group.stage == stage and not self._stop_requested:
                        self._start(child)
            while not self._stop_requested and self._unfinished():
                self._supervise(None)
            self._stop_stages()
            return 0
        finally:
            self._kill_all()  # after an error above: never leave a child behind
            for number, handler in previous.items():
                signal.signal(number, handler)
            self._running = False

    # -- inside ----------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        log.info("turbo_queue: %s received, stopping", signal.Signals(signum).name)
        self.stop()

    def _unfinished(self) -> bool:
        return any(not child.finished for child in self._children)

    def _start(self, child: _Child) -> None:
        group = child.group
        kwargs = dict(group.kwargs)
        if group.index_kwarg:
            kwargs[group.index_kwarg] = group.first_index + child.index
        process = self._context.Process(
            target=_child_main, name=child.name, daemon=group.daemon,
            args=(group.target, group.args, kwargs, os.getpid(), (self._wake_r, self._wake_w), child.name),
        )
        # Signals stay blocked across the fork, so that none reaches the child before it has set
        # its own handlers: it would run the supervisor's inherited handler instead.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        child.process, child.started_at, child.restart_at = process, time.monotonic(), None
        log.info("turbo_queue: started %s (pid %s)", child.name, process.pid)

    def _supervise(self, deadline: Optional[float]) -> None:
        """Wait for a child's death, a due restart, a stop request, the next tick or ``deadline``; act on it."""
        now = time.monotonic()
        wake = now + self._tick_every if self._tick else now + 1.0
        for child in self._children:
            if child.restart_at is not None:
                wake = min(wake, child.restart_at)
        if deadline is not None:
            wake = min(wake, deadline)
        waiting: List[Any] = [self._wake_r]
        waiting += [child.process.sentinel for child in self._children if child.alive and child.process]
        multiprocessing.connection.wait(waiting, max(0.0, wake - now))
        try:
            os.read(self._wake_r, 512)
        except BlockingIOError:
            pass
        self._reap()
        now = time.monotonic()
        for child in self._children:
            if child.restart_at is not None and child.restart_at <= now and not child.stopping:
                child.restarts += 1
                self.restarts += 1
                self._start(child)
        if self._tick and now >= self._ticked + self._tick_every:
            self._ticked = now
            try:
                self._tick(self)
            except Exception:  # a failing progress line must not stop the supervision
                log.exception("turbo_queue: the supervisor's tick failed")

    def _reap(self) -> None:
        """Note every child that has exited; schedule the start again of those that must run."""
        for child in self._children:
            process = child.process
            if process is None or process.exitcode is None:
                continue
            process.join()
            child.process = None
            how = describe_exit(process.exitcode)
            if child.stopping:
                log.info("turbo_queue: %s (pid %s) stopped: %s", child.name, process.pid, how)
                continue
            if process.exitcode == 0 and child.group.restart == "on-failure":
                log.info("turbo_queue: %s (pid %s) finished", child.name, process.pid)
                child.finished = True
                continue
            if child.group.on_death is not None:
                try:
                    child.group.on_death(child.name, process.exitcode)
                except Exception:  # clean-up that fails must not stop the supervision
                    log.exception("turbo_queue: clean-up after %s failed", child.name)
            ran = time.monotonic() - child.started_at
            child.quick_deaths = child.quick_deaths + 1 if ran < self.healthy_after else 0
            delay = min(self.max_backoff, self.min_backoff * 2 ** max(0, child.quick_deaths - 1))
            child.restart_at = time.monotonic() + delay
            log.warning("turbo_queue: %s (pid %s) %s after %.1f s; starting it again in %.2f s",
                        child.name, process.pid, how, ran, delay)

    def _stop_stages(self) -> None:
        for stage in sorted({group.stage for group in self._groups}, reverse=True):
            groups = [group for group in self._groups if group.stage == stage]
            self._wait_for_drains(groups)
            children = [child for child in self._children if child.group.stage == stage]
            for child in children:
                child.stopping = True
                child.restart_at = None
                if child.alive and child.process is not None and child.process.pid is not None:
                    try:
                        os.kill(child.process.pid, signal.SIGTERM)
                    except ProcessLookupError:  # it died just now; _reap notes it
                        pass
            deadline = time.monotonic() + max(group.stop_timeout for group in groups)
            while any(child.alive for child in children) and time.monotonic() < deadline:
                self._supervise(deadline)
            for child in children:
                if child.alive and child.process is not None:
                    log.error("turbo_queue: %s (pid %s) did not stop within %.1f s of SIGTERM; killing it",
                              child.name, child.process.pid, child.group.stop_timeout)
                    child.process.kill()
                    child.process.join()
            self._reap()

    def _wait_for_drains(self, groups: Iterable[_Group]) -> None:
        checks = [group for group in groups if group.drained is not None]
        if not checks:
            return
        deadline = time.monotonic() + self.drain_timeout
        for group in checks:
            assert group.drained is not None
            while not self._hurry and not group.drained():
                if time.monotonic() >= deadline:
                    log.warning("turbo_queue: %s did not drain within %.0f s; stopping it anyway",
                                group.name, self.drain_timeout)
                    return
                self._supervise(min(deadline, time.monotonic() + 0.05))

    def _kill_all(self) -> None:
        for child in self._children:
            child.stopping = True
            child.restart_at = None
            if child.alive and child.process is not None:
                log.error("turbo_queue: %s (pid %s) still running; killing it", child.name, child.process.pid)
                child.process.kill()
                child.process.join()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1


def _child_main(target: Callable[..., Any], args: Tuple[Any, ...], kwargs: Dict[str, Any], parent: int,
                inherited_fds: Tuple[int, int], name: str) -> None:
    """A child's start: its own process group, default signal handlers, SIGTERM when the parent dies.

    Its name (``ps``, ``/proc/<pid>/comm``) becomes the child's, such as ``worker-3``."""
    for fd in inherited_fds:  # the supervisor's wake-up pipe (forked): not this process's
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        os.setpgid(0, 0)
    except OSError:  # already a group leader (spawned in a session of its own): fine
        pass
    _die_with_parent(parent, name)
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:  # not the main thread: cannot happen in a fresh child
        pass
    for signum in signal.valid_signals():
        try:
            handler = signal.getsignal(signum)
        except (OSError, ValueError):
            continue
        if callable(handler) and handler is not signal.default_int_handler:
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    target(*args, **kwargs)


def _die_with_parent(parent: int, name: str) -> None:
    """Ask Linux for SIGTERM when the supervisor dies (SIGKILL included), so that no child outlives it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the C library the interpreter runs on
        libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the supervisor's stop() is then the only stop
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


__all__ = ["Supervisor", "describe_exit"]
