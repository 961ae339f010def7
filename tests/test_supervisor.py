"""The supervisor with real processes and signals: restarts, backoff, stop order, nothing left running."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from turbo_queue.supervisor import Supervisor, describe_exit

from .support.supervised import running, wait_for

#: A program that supervises three stages of children; each child records its pid, the handlers it
#: started with, and its stop (on SIGTERM) in files under the folder given as argv[1].
PROGRAM = textwrap.dedent("""
    import logging, os, signal, sys, time
    from turbo_queue.supervisor import Supervisor

    folder = sys.argv[1]
    stubborn = len(sys.argv) > 2 and sys.argv[2] == "stubborn"

    def child(kind):
        def stop(signum, frame):
            with open(os.path.join(folder, "stops"), "a") as f:
                f.write(f"{kind} {os.getpid()}\\n")
            sys.exit(0)
        term, intr = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
        handlers = f"{term == signal.SIG_DFL} {intr is signal.default_int_handler} {os.getpgid(0) == os.getpid()}"
        if stubborn and kind == "last":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        else:
            signal.signal(signal.SIGTERM, stop)
        with open(os.path.join(folder, f"pid-{kind}-{os.getpid()}"), "w") as f:
            f.write(handlers)
        while True:
            time.sleep(0.05)

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    supervisor = Supervisor(min_backoff=0.05)
    supervisor.add_group("first", child, 1, args=("first",), stage=0)
    supervisor.add_group("middle", child, 2, args=("middle",), stage=1)
    supervisor.add_group("last", child, 1, args=("last",), stage=2, stop_timeout=1.0)
    signal.signal(signal.SIGUSR1, lambda *a: None)  # a handler of the program's own: children must not keep it
    sys.exit(supervisor.run())
""")


def pids_of(folder: Path) -> Dict[int, str]:
    """pid -> kind of every child that started so far."""
    out = {}
    for path in folder.glob("pid-*"):
        _, kind, pid = path.name.split("-")
        out[int(pid)] = kind
    return out


def start(folder: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PROGRAM, str(folder), *args], stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def test_a_killed_child_is_started_again_and_sigterm_stops_all_in_order(tmp_path):
    proc = start(tmp_path)
    try:
        wait_for(lambda: len(pids_of(tmp_path)) == 4, message="4 children start")
        first = pids_of(tmp_path)
        victim = next(pid for pid, kind in first.items() if kind == "middle")
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(pids_of(tmp_path)) == 5, message="the killed child is started again")
        replacement = (set(pids_of(tmp_path)) - set(first)).pop()
        assert pids_of(tmp_path)[replacement] == "middle"
        assert not running(victim)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read()
    assert f"(pid {victim}) was killed by SIGKILL" in stderr and "starting it again in" in stderr
    every = pids_of(tmp_path)
    assert not [pid for pid in every if running(pid)], "a child was left running"
    # Each child started with the default handlers (not the program's) in a process group of its own.
    assert {(tmp_path / f"pid-{kind}-{pid}").read_text() for pid, kind in every.items()} == {"True True True"}
    stops = [line.split()[0] for line in (tmp_path / "stops").read_text().splitlines()]
    assert stops == ["last", "middle", "middle", "first"]  # by descending stage


def test_sigint_to_the_terminals_process_group_reaches_the_supervisor_only(tmp_path):
    proc = start(tmp_path)
    try:
        wait_for(lambda: len(pids_of(tmp_path)) == 4, message="4 children start")
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    stops = [line.split()[0] for line in (tmp_path / "stops").read_text().splitlines()]
    assert stops == ["last", "middle", "middle", "first"]  # none was interrupted out of order
    assert not [pid for pid in pids_of(tmp_path) if running(pid)]


def test_a_child_that_ignores_sigterm_is_killed_and_said_so(tmp_path):
    proc = start(tmp_path, "stubborn")
    try:
        wait_for(lambda: len(pids_of(tmp_path)) == 4, message="4 children start")
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read()
    assert "did not stop within 1.0 s of SIGTERM; killing it" in stderr
    assert not [pid for pid in pids_of(tmp_path) if running(pid)]


def test_children_of_a_killed_supervisor_are_stopped(tmp_path):
    proc = start(tmp_path)
    try:
        wait_for(lambda: len(pids_of(tmp_path)) == 4, message="4 children start")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        wait_for(lambda: not [pid for pid in pids_of(tmp_path) if running(pid)], message="children end too")
    finally:
        if proc.poll() is None:
            proc.kill()
    # Each got SIGTERM from Linux when its parent died, and ran its own clean stop.
    assert len((tmp_path / "stops").read_text().splitlines()) == 4


def _exit_with(status: int) -> None:
    os._exit(status)


def _run_in_thread(supervisor: Supervisor) -> Tuple[List[int], threading.Thread]:
    """Run ``supervisor`` in a thread of its own: what run() returns is appended to the list."""
    result: List[int] = []
    thread = threading.Thread(target=lambda: result.append(supervisor.run()))
    thread.start()
    return result, thread


def test_the_backoff_doubles_after_each_quick_death(caplog):
    caplog.set_level(logging.WARNING, logger="turbo_queue")
    supervisor = Supervisor(min_backoff=0.02, max_backoff=0.16)
    supervisor.add_group("crash", _exit_with, 1, args=(3,))
    result, thread = _run_in_thread(supervisor)
    try:
        wait_for(lambda: supervisor.restarts >= 6, message="six restarts")
    finally:
        supervisor.stop()
        thread.join(30)
    assert result == [0]
    delays = [record.getMessage().rsplit(" in ", 1)[1] for record in caplog.records
              if "exited with status 3" in record.getMessage()]
    assert delays[:6] == ["0.02 s", "0.04 s", "0.08 s", "0.16 s", "0.16 s", "0.16 s"]


def _sleep_then_exit(seconds: float, status: int) -> None:
    time.sleep(seconds)
    os._exit(status)


def test_the_backoff_is_reset_after_a_child_ran_a_while(caplog):
    caplog.set_level(logging.WARNING, logger="turbo_queue")
    supervisor = Supervisor(min_backoff=0.02, healthy_after=0.2)
    supervisor.add_group("slow", _sleep_then_exit, 1, args=(0.3, 1))
    result, thread = _run_in_thread(supervisor)
    try:
        wait_for(lambda: supervisor.restarts >= 3, message="three restarts")
    finally:
        supervisor.stop()
        thread.join(30)
    assert result == [0]
    delays = [record.getMessage().rsplit(" in ", 1)[1] for record in caplog.records]
    assert delays[:3] == ["0.02 s"] * 3


def test_on_failure_children_that_finish_are_not_started_again():
    supervisor = Supervisor(min_backoff=0.01)
    supervisor.add_group("done", _exit_with, 3, args=(0,), restart="on-failure")
    assert supervisor.run() == 0
    assert supervisor.restarts == 0


def _touch_later(path: str, seconds: float) -> None:
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0 if os.path.exists(path) else 9))
    open(path + ".up", "w").close()
    time.sleep(seconds)
    open(path, "w").close()
    while True:
        time.sleep(0.05)


def test_a_stage_is_stopped_only_once_it_drained(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="turbo_queue")
    flag = str(tmp_path / "drained")
    supervisor = Supervisor()
    supervisor.add_group("drainer", _touch_later, 1, args=(flag, 0.3), drained=lambda: os.path.exists(flag))
    result, thread = _run_in_thread(supervisor)
    wait_for(lambda: os.path.exists(flag + ".up"), message="the child starts")
    supervisor.stop()  # at once: the stop waits for the drain
    thread.join(30)
    assert result == [0]
    # The child exits 0 only if the flag existed when it got SIGTERM.
    assert any("drainer-0" in r.getMessage() and "exited with status 0" in r.getMessage() for r in caplog.records)


def test_a_second_stop_skips_the_wait_for_a_drain(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="turbo_queue")
    supervisor = Supervisor(drain_timeout=600)
    supervisor.add_group("never", _touch_later, 1, args=(str(tmp_path / "x"), 600), drained=lambda: False)
    result, thread = _run_in_thread(supervisor)
    wait_for(lambda: os.path.exists(tmp_path / "x.up"), message="the child starts")
    supervisor.stop()
    supervisor.stop()
    thread.join(30)
    assert result == [0] and not thread.is_alive()
    assert any("never-0" in r.getMessage() and "exited with status 9" in r.getMessage() for r in caplog.records)


def test_bad_settings_are_refused_with_the_name():
    with pytest.raises(ValueError, match="min_backoff"):
        Supervisor(min_backoff=-1)
    supervisor = Supervisor()
    supervisor.add_group("a", _exit_with)
    with pytest.raises(ValueError, match="name of its own"):
        supervisor.add_group("a", _exit_with)
    with pytest.raises(ValueError, match="restart"):
        supervisor.add_group("b", _exit_with, restart="never")
    with pytest.raises(ValueError, match="count"):
        supervisor.add_group("c", _exit_with, -1)


def test_describe_exit():
    assert describe_exit(0) == "exited with status 0"
    assert describe_exit(-signal.SIGKILL) == "was killed by SIGKILL"
    assert describe_exit(-signal.SIGSEGV) == "was killed by SIGSEGV"
