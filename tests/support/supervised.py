"""Helpers for tests of supervised processes: waiting with a deadline, and whether a pid still runs."""

from __future__ import annotations

import os
import time
from typing import Callable, List, TypeVar

T = TypeVar("T")


def wait_for(what: Callable[[], T], timeout: float = 60.0, message: str = "") -> T:
    """``what()`` once it is true; AssertionError naming ``message`` if it is not within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout} s in vain: {message}")
        time.sleep(0.02)


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or between the open and the read
        return False


def descendants(pid: int) -> List[int]:
    """Every living process below ``pid`` (children, their children, ...), from /proc."""
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    parents[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue
    out: List[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        kids = [child for child, of in parents.items() if of == parent]
        out += kids
        todo += kids
    return [child for child in out if running(child)]
