"""turbo-queue 0.8.0's MultiTask and TaskGroup, used as 0.8.0's users wrote them, on the supervisor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Tuple

import pytest

from turbo_queue import MultiTask, TaskGroup
from turbo_queue.legacy import MultiTask as LegacyMultiTask

from .support.supervised import running, wait_for

#: 0.8.0-style code: two groups, property-style settings, start_all() blocks until a signal.
PROGRAM = textwrap.dedent("""
    import os, sys, time
    from turbo_queue import MultiTask, TaskGroup

    def work(folder, label, process_id):
        with open(os.path.join(folder, f"{label}-{process_id}-{os.getpid()}"), "w"):
            pass
        while True:
            time.sleep(0.05)

    if __name__ == "__main__":
        tasks = MultiTask()
        for label, count, start in (("a", 3, 11), ("b", 1, 100)):
            group = TaskGroup()
            group.function_to_call = work
            group.kwargs = {"folder": sys.argv[1], "label": label}
            group.process_count = count
            group.process_number_start = start
            tasks.add_task(group)
        tasks.add_task(TaskGroup())  # no function: ignored, as in 0.8.0
        tasks.start_all()
        print("not reached: start_all() exits on a signal")
""")


def started(folder: Path) -> Dict[int, Tuple[str, int]]:
    """pid -> (label, process_id) of every task process started so far."""
    out = {}
    for path in folder.iterdir():
        label, number, pid = path.name.split("-")
        out[int(pid)] = (label, int(number))
    return out


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGTSTP])
def test_0_8_0_code_runs_unchanged_restarts_dead_children_and_stops_on_a_signal(tmp_path, signum):
    script = tmp_path / "app.py"
    script.write_text(PROGRAM)
    folder = tmp_path / "out"
    folder.mkdir()
    proc = subprocess.Popen([sys.executable, str(script), str(folder)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(started(folder)) == 4, message="4 task processes start")
        first = started(folder)
        assert sorted(first.values()) == [("a", 11), ("a", 12), ("a", 13), ("b", 100)]
        victim = next(pid for pid, task in first.items() if task == ("a", 12))
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(started(folder)) == 5, message="the killed process is started again")
        again = (set(started(folder)) - set(first)).pop()
        assert started(folder)[again] == ("a", 12)  # the same process_id
        os.kill(proc.pid, signum)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "not reached" not in out
    assert not [pid for pid in started(folder) if running(pid)], "a task process was left running"


def _finish(folder: str, process_id: int) -> None:
    open(os.path.join(folder, str(process_id)), "w").close()


def test_start_all_returns_once_every_task_finished(tmp_path):
    group = TaskGroup()
    group.function_to_call = _finish
    group.kwargs = {"folder": str(tmp_path)}
    group.process_count = 2
    group.process_number_start = 0
    tasks = MultiTask()
    tasks.add_task(group)
    tasks.start_all()
    assert sorted(os.listdir(tmp_path)) == ["0", "1"]


def test_a_wrong_setting_is_named_before_anything_starts(tmp_path):
    group = TaskGroup()
    group.function_to_call = _finish
    group.process_count = "4"
    tasks = LegacyMultiTask()
    tasks.add_task(group)
    with pytest.raises(ValueError, match="TaskGroup.process_count must be a non-negative integer, got '4'"):
        tasks.start_all()
    group.process_count, group.kwargs = 1, ["folder"]
    with pytest.raises(ValueError, match="TaskGroup.kwargs must be a dict"):
        tasks.start_all()
