"""The tests' fixtures, registered once (``pytest_plugins`` in tests/conftest.py)."""

from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from tools.faults.permissions import other_user_python
from tools.faults.processes import Unavailable

from .commands import Exporter, Terminal
from .processes import Child

#: The variable that replays a randomized test: ``TURBO_QUEUE_SEED=<seed shown by the test>``.
SEED_VARIABLE = "TURBO_QUEUE_SEED"


@pytest.fixture
def folder(tmp_path: Path) -> str:
    """An empty queue folder on the test's own temporary disk space."""
    path = tmp_path / "queue"
    path.mkdir()
    return str(path)


@pytest.fixture
def children() -> Iterator[Callable[..., Child]]:
    """Start child programs: ``children(code, *args, cwd=None, ready=None)`` (with ``ready``, wait
    for the line the program prints once it holds what it should). Any still running at the end of
    the test is killed."""
    started: List[Child] = []

    def start(code: str, *args: str, cwd: Optional[str] = None, ready: Optional[str] = None) -> Child:
        child = Child(code, *args, cwd=cwd)
        started.append(child)
        if ready is not None:
            child.expect(ready)
        return child

    yield start
    for child in started:
        child.close()


@pytest.fixture
def seed() -> int:
    """The seed of a randomized test: random, or the one ``TURBO_QUEUE_SEED`` names (printed, so a
    failure can be replayed)."""
    value = int(os.environ.get(SEED_VARIABLE) or random.randrange(2**32))
    print(f"{SEED_VARIABLE}={value}")
    return value


@pytest.fixture(autouse=True)
def no_leaked_timer_threads(request: pytest.FixtureRequest) -> Iterator[None]:
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


@pytest.fixture
def exporters() -> Iterator[Callable[..., Exporter]]:
    started: List[Exporter] = []

    def start(*args: str) -> Exporter:
        exporter = Exporter(*args)
        started.append(exporter)
        return exporter

    yield start
    for exporter in started:
        exporter.kill()


@pytest.fixture
def terminal() -> Iterator[Callable[..., Terminal]]:
    opened: List[Terminal] = []

    def start(*args: str, **size: int) -> Terminal:
        term = Terminal(*args, **size)
        opened.append(term)
        return term

    yield start
    for term in opened:
        term.close()


@pytest.fixture
def shared_tmp() -> Iterator[str]:
    """A folder that other users may enter (the test's own tmp_path is private to root)."""
    path = tempfile.mkdtemp(prefix="turbo_queue-perm-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def unprivileged(shared_tmp: str) -> Tuple[List[str], Dict[str, str]]:
    """(interpreter command, environment) of a user without root's power to read anything: user
    nobody when root, with a copy of turbo_queue it may read wherever this checkout is."""
    if os.geteuid() != 0:
        return [sys.executable], {}
    try:
        python, env = other_user_python(shared_tmp)
    except Unavailable as exc:
        pytest.skip(f"running as root, and no way to meet a permission error: {exc}")
    return [shutil.which("setpriv") or "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", *python], env
