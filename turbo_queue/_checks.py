"""Checks of the arguments given to the public API: a clear ValueError at the call that was wrong."""

from __future__ import annotations

from typing import Optional


def check_timeout(timeout: Optional[float]) -> None:
    """ValueError for a negative ``timeout`` (None waits for ever), as ``queue.Queue`` says it."""
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")


def positive_int(name: str, value: object) -> int:
    """``value`` if it is an int of at least 1 (not a bool); else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def true_or_false(name: str, value: object) -> bool:
    """``value`` if it is True or False; else ValueError naming ``name`` (``bool('no')`` is True)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def positive_number(name: str, value: object) -> float:
    """``value`` as a float if it is a number above 0 (seconds); else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)
