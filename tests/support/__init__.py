"""What the tests share: child programs, a look at a queue folder, waiting, the random seed.

Tests import from here (``from tests.support import Child, drain``); the fixtures (``folder``,
``children``, ``seed``) are registered once, by :mod:`tests.support.plugin`. What a test and a
fault scenario both need (reading a folder, draining it, waiting for a condition) is defined once
in :mod:`tools.faults` and used from here, so that both judge a folder the same way.
"""

from __future__ import annotations

from .folders import digest, drain, hand_over, listing, read_batch, snapshot, until_none
from .processes import DEADLINE, Child, run_python
from .waiting import wait_for

__all__ = ["DEADLINE", "Child", "digest", "drain", "hand_over", "listing", "read_batch", "run_python", "snapshot",
           "until_none", "wait_for"]
