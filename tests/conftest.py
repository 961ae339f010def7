"""Shared fixtures: a fresh queue folder per test, and helpers to run real child processes.

tools/ is put on ``sys.path`` here, so that a test can ``import chaos`` and use its helpers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Dict, List

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))


@pytest.fixture
def folder(tmp_path: Path) -> str:
    """An empty queue folder on the test's own temporary disk space."""
    path = tmp_path / "queue"
    path.mkdir()
    return str(path)


def listing(folder: str) -> Dict[str, List[str]]:
    """The folder's file names grouped by protocol state (plus 'other')."""
    groups: Dict[str, List[str]] = {"loading": [], "ready": [], "chosen": [], "bad": [], "other": []}
    for name in sorted(os.listdir(folder)):
        state = name.split("_", 1)[0]
        if name.endswith(("-journal", "-wal", "-shm")):
            state = "other"
        groups[state if state in groups else "other"].append(name)
    return groups


def run_python(code: str, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (a separate program), returning its output."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True, text=True, timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"child exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


@pytest.fixture(autouse=True)
def no_leaked_timer_threads(request):
    """Fail a test that leaves a roll timer running (an Enqueuer it did not close).

    CPython's own tests, bound in test_cpython_*, do not close their queues: they are exempt.
    """
    if request.node.module.__name__.split(".")[-1].startswith("test_cpython"):
        yield
        return
    before = {t for t in threading.enumerate() if t.name == "turbo_queue-roll-timer"}
    yield
    leaked = [t for t in threading.enumerate() if t.name == "turbo_queue-roll-timer" and t not in before and t.is_alive()]
    assert not leaked, f"{len(leaked)} Enqueuer(s) left open by this test"
