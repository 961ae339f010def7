"""CPython's test_queue and test_logging queue tests, bound to turbo_queue (no start method needed)."""

from .cpython_bindings import TurboJoinableQueueTest, TurboQueueListenerTest, TurboQueueTest, TurboSimpleQueueTest

__all__ = ["TurboJoinableQueueTest", "TurboQueueListenerTest", "TurboQueueTest", "TurboSimpleQueueTest"]
