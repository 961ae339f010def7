"""Waiting for a real condition, with a deadline."""

from __future__ import annotations

from tools.faults.processes import wait_for

__all__ = ["wait_for"]
