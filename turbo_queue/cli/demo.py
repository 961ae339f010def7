"""``turbo-queue demo``: a small multi-process pipeline through a queue folder."""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import sys
import tempfile
import time
from typing import TYPE_CHECKING, List

from .. import _folder, _platform
from ..consumer import Dequeuer
from ..producer import Enqueuer
from . import _exit
from ._args import add_command, positive_int

if TYPE_CHECKING:
    import multiprocessing
    from multiprocessing.sharedctypes import Synchronized


def _produce(folder: str, start: int, stop: int, codec: str) -> None:
    with Enqueuer(folder, codec=codec) as enqueuer:
        for first in range(start, stop, 100):
            enqueuer.put_many(
                [{"id": i, "user": f"user{i % 1000}", "tags": ["demo", str(i % 7)], "text": "hello " * 8}
                 for i in range(first, min(first + 100, stop))]
            )


def _consume(folder: str, total: int, received: Synchronized[int], results: multiprocessing.Queue[bytes]) -> None:
    seen = bytearray(total)
    with Dequeuer(folder) as dequeuer:
        while received.value < total:
            try:
                items = dequeuer.get_many(1000, timeout=0.1)
            except queue.Empty:
                continue
            for item in items:
                seen[item["id"]] += 1
            with received.get_lock():
                received.value += len(items)
    results.put(bytes(seen))


DESCRIPTION = """\
Producers put items into a queue folder, consumers take them; prints what moved, how fast, and that
nothing was lost.
"""
EXAMPLES = """\
  turbo-queue demo                          move 200,000 items through a temporary queue
  turbo-queue demo --producers 4 --consumers 4 --items 1000000
  turbo-queue demo --folder /var/tmp/demo   in a folder of your choice (empty or new)
"""
EXITS = (
    (_exit.OK, "every item arrived, once"),
    (_exit.BAD_DATA, "an item was lost or duplicated, or a worker process failed"),
    (_exit.USAGE, "bad arguments, or a --folder that is not a folder, or already holds batches"),
    (_exit.PERMISSION, "permission denied (the --folder cannot be written)"),
    (_exit.INTERRUPTED, "interrupted (Ctrl-C)"),
)


def _check_folder(folder: str) -> int:
    """``OK`` if ``folder`` can be the demo's queue (made if missing); else say why on stderr."""
    try:
        _platform.prepare_folder(folder)  # "not a folder", a network filesystem: said here
        _folder.require_writable(folder, "the demo")
        held = [name for name in os.listdir(folder) if _folder.parse_name(name) is not None]
    except OSError as exc:  # not a folder, not writable, a network filesystem, ...
        said = f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)
        print(f"turbo-queue demo: {said}", file=sys.stderr)
        return _exit.PERMISSION if isinstance(exc, PermissionError) else _exit.USAGE
    if held:
        print(f"turbo-queue demo: {folder} already holds batches ({held[0]}, ...); "
              f"the demo needs an empty or new folder", file=sys.stderr)
        return _exit.USAGE
    return _exit.OK


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = add_command(commands, common, "demo", help="run a small multi-process pipeline through a queue",
                    description=DESCRIPTION, examples=EXAMPLES, exits=EXITS)
    p.add_argument("--items", type=positive_int, default=200_000, help="items to move (default 200,000)")
    p.add_argument("--producers", type=positive_int, default=2, help="producer processes (default 2)")
    p.add_argument("--consumers", type=positive_int, default=2, help="consumer processes (default 2)")
    p.add_argument("--codec", choices=["pickle", "json"], default="pickle", help="codec (default pickle)")
    p.add_argument("--folder", help="queue folder to use (default: a temporary one, removed afterwards)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import multiprocessing

    owned = args.folder is None
    if not owned:
        code = _check_folder(os.path.abspath(args.folder))  # here, once, rather than as a traceback in every worker
        if code != _exit.OK:
            return code
    folder = args.folder or tempfile.mkdtemp(prefix="turbo_queue-demo-", dir=_platform.fast_temp_root())
    total, producers, consumers = args.items, args.producers, args.consumers
    print(f"turbo_queue demo: {producers} producer(s) -> {folder} -> {consumers} consumer(s), {total:,} items")
    received = multiprocessing.Value("q", 0)
    results: multiprocessing.Queue[bytes] = multiprocessing.Queue()
    started = time.perf_counter()
    workers = [
        multiprocessing.Process(target=_consume, args=(folder, total, received, results)) for _ in range(consumers)
    ]
    share = -(-total // producers)
    workers += [
        multiprocessing.Process(target=_produce, args=(folder, i * share, min(total, (i + 1) * share), args.codec))
        for i in range(producers)
    ]
    try:
        for worker in workers:
            worker.start()
        seen: List[bytes] = []
        while len(seen) < consumers:
            try:
                seen.append(results.get(timeout=0.5))
            except queue.Empty:
                failed = [w for w in workers if w.exitcode not in (None, 0)]
                if failed:
                    print(f"turbo-queue demo: a worker process failed (exit code {failed[0].exitcode})",
                          file=sys.stderr)
                    return _exit.BAD_DATA
        elapsed = time.perf_counter() - started
        for worker in workers:
            worker.join()
    finally:
        for worker in workers:
            if worker.is_alive() and worker.exitcode is None and len(seen) < consumers:
                worker.terminate()
        if owned:
            shutil.rmtree(folder, ignore_errors=True)
    counts = [sum(column) for column in zip(*seen)] if total else []
    lost = sum(1 for c in counts if c == 0)
    duplicated = sum(c - 1 for c in counts if c > 1)
    print(f"moved {sum(counts):,} items in {elapsed:.2f} s: {sum(counts) / elapsed:,.0f} items/s")
    print(f"lost {lost}, duplicated {duplicated}" + ("" if lost else ": every item arrived"))
    return _exit.OK if lost == 0 and duplicated == 0 else _exit.BAD_DATA
