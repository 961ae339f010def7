"""CPython's multiprocessing queue tests, bound to turbo_queue, with the forkserver start method."""

from .cpython_bindings import install

install(globals(), "forkserver")
