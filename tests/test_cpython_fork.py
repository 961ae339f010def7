"""CPython's multiprocessing queue tests, bound to turbo_queue, with the fork start method."""

from .cpython_bindings import install

install(globals(), "fork")
