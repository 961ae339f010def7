"""CPython's own tests of its queues, bound to turbo_queue's classes.

CPython runs ``test._test_multiprocessing`` once per start method by building test classes from its
``_Test*`` bases and a mixin that names the queue classes (``ProcessesMixin``). This module does
the same with a mixin that names ``turbo_queue.Queue`` and ``turbo_queue.JoinableQueue`` (and, for
tests that call ``multiprocessing.Queue()`` & co. directly, puts turbo_queue's classes in their
place while the test runs). ``test_cpython_{fork,spawn,forkserver}.py`` call ``install``.

A test left out is listed in ``LEFT_OUT`` with its reason; ``test_cpython_left_out.py`` checks
that each still exists upstream and asserts the documented difference where there is one.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import unittest
from typing import Dict, List, Tuple
from unittest import mock

import pytest

import turbo_queue

try:
    from test import _test_multiprocessing as mp_tests
    from test import test_logging as logging_tests
    from test import test_queue as queue_tests
except ImportError as exc:  # some distributions ship Python without its test package
    if os.environ.get("CI") == "true":
        raise
    pytest.skip(f"this Python has no test package ({exc}); CI runs these tests", allow_module_level=True)

#: Tests of the bound classes that do not run, and why. Keyed by (CPython class, test name).
LEFT_OUT: Dict[Tuple[str, str], str] = {
    ("_TestQueue", "test_queue_feeder_donot_stop_onexc"):
        "expects put() of an unpicklable object to succeed and the item to vanish in the feeder "
        "thread; turbo_queue raises at put() instead (a documented difference, asserted in "
        "test_cpython_left_out.py)",
    ("_TestQueue", "test_queue_feeder_on_queue_feeder_error"):
        "subclasses multiprocessing.queues.Queue to override its private feeder-thread hook",
    ("BaseSimpleQueueTest", "test_references"):
        "puts an instance of a class local to the test, which no process queue can pickle "
        "(multiprocessing.Queue fails it too); that get() keeps no reference to a returned item "
        "is asserted in test_queue_behaviour.py",
    ("TestSimpleQueue", "test_closed"):
        "checks the private _reader/_writer pipe ends of multiprocessing.SimpleQueue",
    ("TestStartMethod", "test_mixed_startmethod"):
        "expects a fork-context queue to fail in a spawned child (a SemLock limitation); "
        "turbo_queue's queues work with every start method (asserted in test_cpython_left_out.py)",
}

#: From the classes that test more than queues, the tests that carry data through a queue.
QUEUE_TESTS_OF: Dict[str, List[str]] = {
    "_TestProcess": [
        "test_args_argument", "test_process", "test_process_mainthread_native_id", "test_close",
        "test_lose_target_ref", "test_child_fd_inflation",
    ],
    "TestStartMethod": ["test_nested_startmethod", "test_mixed_startmethod"],
}


def use_turbo_queue_classes(test: unittest.TestCase) -> None:
    """While ``test`` runs, ``multiprocessing.Queue`` & co. are turbo_queue's classes."""
    for name, replacement in (("Queue", turbo_queue.Queue), ("JoinableQueue", turbo_queue.JoinableQueue),
                              ("SimpleQueue", turbo_queue.SimpleQueue)):
        patcher = mock.patch.object(multiprocessing, name, replacement)
        patcher.start()
        test.addCleanup(patcher.stop)


class TurboProcessesMixin(mp_tests.ProcessesMixin):
    """``ProcessesMixin`` with turbo_queue's queues."""

    Queue = staticmethod(turbo_queue.Queue)
    JoinableQueue = staticmethod(turbo_queue.JoinableQueue)

    def setUp(self) -> None:
        use_turbo_queue_classes(self)  # type: ignore[arg-type]
        super().setUp()


class _PatchedMultiprocessing:
    """For CPython test classes that call ``multiprocessing.Queue()`` & co. themselves."""

    def setUp(self) -> None:
        use_turbo_queue_classes(self)  # type: ignore[arg-type]
        super().setUp()  # type: ignore[misc]


def _bind(base: type, namespace: dict, name: str, mixins: tuple = ()) -> None:
    cls_name = base.__name__
    wanted = QUEUE_TESTS_OF.get(cls_name)
    body = {}
    for attr in dir(base):
        if not attr.startswith("test_"):
            continue
        if (wanted is not None and attr not in wanted) or (cls_name, attr) in LEFT_OUT:
            body[attr] = None  # not collected
    bound = type(name, (base, *mixins, unittest.TestCase), body)
    bound.__qualname__ = name
    bound.__module__ = namespace["__name__"]
    namespace[name] = bound


def bound_queue_tests() -> type:
    """The class of multiprocessing's queue tests bound to turbo_queue, as install() binds it."""
    namespace = {"__name__": __name__}
    _bind(mp_tests._TestQueue, namespace, "WithTurboTestQueue", (TurboProcessesMixin,))
    return namespace["WithTurboTestQueue"]


def install(namespace: dict, start_method: str) -> None:
    """Put the bound test classes and a start-method module setup into ``namespace``."""
    if start_method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"the {start_method} start method does not exist here", allow_module_level=True)
    for base in (mp_tests._TestQueue, mp_tests._TestProcess):
        _bind(base, namespace, "WithTurbo" + base.__name__[1:], (TurboProcessesMixin,))
    for base in (mp_tests.TestSimpleQueue, mp_tests.TestStartMethod):
        _bind(base, namespace, "Turbo" + base.__name__, (_PatchedMultiprocessing,))
    previous: List[object] = []

    def setUpModule() -> None:
        previous.append(multiprocessing.get_start_method(allow_none=True))
        multiprocessing.set_start_method(start_method, force=True)

    def tearDownModule() -> None:
        multiprocessing.set_start_method(previous.pop(), force=True)

    namespace["setUpModule"] = setUpModule
    namespace["tearDownModule"] = tearDownModule


# -- test.test_queue: the tests of queue.Queue and queue.SimpleQueue that a process queue meets --

class TurboQueueTest(queue_tests.QueueTest, unittest.TestCase):
    """``queue.Queue``'s tests against ``turbo_queue.Queue`` (task_done/join: JoinableQueue, below)."""

    queue = queue
    test_queue_task_done = None
    test_queue_join = None

    def setUp(self) -> None:
        super().setUp()
        self.type2test = turbo_queue.Queue


class TurboJoinableQueueTest(queue_tests.QueueTest, unittest.TestCase):
    queue = queue
    test_basic = None  # checks the class name ("Queue"): TurboQueueTest runs it
    test_negative_timeout_raises_exception = None
    test_nowait = None
    test_shrinking_queue = None

    def setUp(self) -> None:
        super().setUp()
        self.type2test = turbo_queue.JoinableQueue


class TurboSimpleQueueTest(queue_tests.BaseSimpleQueueTest, unittest.TestCase):
    """``queue.SimpleQueue``'s tests: an unbounded queue with blocking, timed gets."""

    queue = queue
    test_references = None  # see LEFT_OUT

    def setUp(self) -> None:
        self.type2test = turbo_queue.Queue
        super().setUp()


# -- test.test_logging: QueueListener over a process queue ------------------------------------

class TurboQueueListenerTest(logging_tests.QueueListenerTest):
    test_handle_called_with_queue_queue = None  # queue.Queue, not a process queue
    test_calls_task_done_after_stop = None  # queue.Queue, not a process queue

    def setUp(self) -> None:
        use_turbo_queue_classes(self)
        # test_logging expects a root logger without handlers, as under CPython's own runner:
        # set pytest's log capture handlers aside while it runs.
        root = logging.getLogger()
        saved = root.handlers[:]
        root.handlers[:] = []
        self.addCleanup(root.handlers.extend, saved)
        super().setUp()
