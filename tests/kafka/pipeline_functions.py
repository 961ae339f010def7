"""Functions the pipeline's tests run as ``tests.kafka.pipeline_functions:NAME``."""

from __future__ import annotations

import time
from typing import Any

import orjson

from turbo_queue.kafka import Message


def tag(message: Message) -> Message:
    """The event with ``"tagged": true``, its key, and its headers plus ``via``."""
    event = orjson.loads(message.value)
    event["tagged"] = True
    return Message(orjson.dumps(event), key=message.key, headers=list(message.headers or []) + [("via", b"pipeline")])


def slow_tag(message: Message) -> Message:
    """``tag`` after 0.5 ms: a run lasts long enough to kill its processes at random moments."""
    time.sleep(0.0005)
    return tag(message)


def tag_but_fail_on_hundreds(message: Message) -> Any:
    """``tag``, but raises on events whose n is a multiple of 100."""
    n = orjson.loads(message.value)["n"]
    if n % 100 == 0:
        raise ValueError(f"event {n} is a round number")
    return tag(message)


def slower_tag(message: Message) -> Message:
    """``tag`` after 2 ms: a run that a test can stop midway."""
    time.sleep(0.002)
    return tag(message)
