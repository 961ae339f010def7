"""Each CPython queue test left out of the bound suites exists upstream and has a stated reason,
and where it is left out because turbo_queue behaves differently, the difference is asserted here."""

from __future__ import annotations

import multiprocessing
import queue

import pytest

import turbo_queue

from .cpython_bindings import LEFT_OUT, TurboProcessesMixin, bound_queue_tests, mp_tests, queue_tests


@pytest.mark.parametrize("cls_name,test_name", sorted(LEFT_OUT))
def test_a_left_out_test_exists_upstream_and_says_why(cls_name, test_name):
    owner = getattr(mp_tests, cls_name, None) or getattr(queue_tests, cls_name)
    assert callable(getattr(owner, test_name))
    assert len(LEFT_OUT[(cls_name, test_name)]) > 40


def test_the_bound_suites_run_against_turbo_queue():
    WithTurboTestQueue = bound_queue_tests()
    assert WithTurboTestQueue.Queue is turbo_queue.Queue
    assert WithTurboTestQueue.JoinableQueue is turbo_queue.JoinableQueue
    assert WithTurboTestQueue.test_queue_feeder_on_queue_feeder_error is None
    test = WithTurboTestQueue("test_qsize")
    test.setUp()
    try:
        assert multiprocessing.Queue is turbo_queue.Queue
        assert multiprocessing.SimpleQueue is turbo_queue.SimpleQueue
    finally:
        test.doCleanups()
    assert multiprocessing.Queue is not turbo_queue.Queue
    assert issubclass(WithTurboTestQueue, TurboProcessesMixin)


class NotPicklable:
    def __reduce__(self):
        raise AttributeError("no pickling here")


def test_an_unpicklable_item_raises_at_put_instead_of_vanishing():
    # multiprocessing.Queue accepts it and loses it in its feeder thread (test_queue_feeder_donot_stop_onexc).
    q = turbo_queue.Queue()
    try:
        with pytest.raises(TypeError, match="'NotPicklable'.*pickle codec"):
            q.put(NotPicklable())
        q.put(True)
        assert q.qsize() == 1
        assert q.get(timeout=10) is True
        assert q.empty()
    finally:
        q.close()


def _put_one(q):
    q.put(1)


@pytest.mark.parametrize("process_method", [m for m in ("spawn", "forkserver") if m in multiprocessing.get_all_start_methods()])
def test_a_queue_made_under_fork_works_in_spawned_children(process_method):
    # multiprocessing refuses this ("A SemLock created in a fork context..."): test_mixed_startmethod.
    q = turbo_queue.Queue()
    try:
        child = multiprocessing.get_context(process_method).Process(target=_put_one, args=(q,))
        child.start()
        child.join(60)
        assert child.exitcode == 0
        assert q.get(timeout=10) == 1
    finally:
        q.close()


def test_queue_empty_and_full_are_the_standard_library_classes():
    assert turbo_queue.Empty is queue.Empty and turbo_queue.Full is queue.Full
