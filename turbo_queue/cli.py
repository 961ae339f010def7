"""The ``turbo-queue`` command (also ``python -m turbo_queue``)."""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import queue
import shutil
import sys
import tempfile
import time
from typing import List, Optional

from . import _platform, __version__
from .consumer import Dequeuer
from .producer import Enqueuer
from .recovery import recover

EPILOG = """examples:
  turbo-queue demo                          move 200,000 items through a temporary queue
  turbo-queue demo --producers 4 --consumers 4 --items 1000000
  turbo-queue recover /var/queues/events    put back the files of processes that died
  turbo-queue recover /var/queues/events --dry-run --json
"""


def _produce(folder: str, start: int, stop: int, codec: str) -> None:
    with Enqueuer(folder, codec=codec) as enqueuer:
        for first in range(start, stop, 100):
            enqueuer.put_many(
                [{"id": i, "user": f"user{i % 1000}", "tags": ["demo", str(i % 7)], "text": "hello " * 8}
                 for i in range(first, min(first + 100, stop))]
            )


def _consume(folder: str, total: int, received, results) -> None:  # type: ignore[no-untyped-def]
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


def demo(args: argparse.Namespace) -> int:
    owned = args.folder is None
    folder = args.folder or tempfile.mkdtemp(prefix="turbo_queue-demo-", dir=_platform.fast_temp_root())
    total, producers, consumers = args.items, args.producers, args.consumers
    print(f"turbo_queue demo: {producers} producer(s) -> {folder} -> {consumers} consumer(s), {total:,} items")
    received = multiprocessing.Value("q", 0)
    results: "multiprocessing.Queue[bytes]" = multiprocessing.Queue()
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
        seen = [results.get() for _ in range(consumers)]
        elapsed = time.perf_counter() - started
        for worker in workers:
            worker.join()
    finally:
        if owned:
            shutil.rmtree(folder, ignore_errors=True)
    counts = [sum(column) for column in zip(*seen)] if total else []
    lost = sum(1 for c in counts if c == 0)
    duplicated = sum(c - 1 for c in counts if c > 1)
    print(f"moved {sum(counts):,} items in {elapsed:.2f} s: {sum(counts) / elapsed:,.0f} items/s")
    print(f"lost {lost}, duplicated {duplicated}" + ("" if lost else ": every item arrived"))
    return 0 if lost == 0 and duplicated == 0 else 1


def recover_command(args: argparse.Namespace) -> int:
    if not os.path.isdir(args.folder):
        print(f"turbo-queue recover: {args.folder}: no such folder", file=sys.stderr)
        return 2
    report = recover(args.folder, dry_run=args.dry_run)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    verb = "would re-queue" if args.dry_run else "re-queued"
    for label, names in ((verb, report.requeued), ("removed (empty)", report.removed),
                         ("quarantined as bad_", report.quarantined), ("left alone (newer format or journal)", report.refused)):
        for name in names:
            print(f"{label}: {name}")
    if not args.quiet:
        print(f"{report.folder}: {len(report.requeued)} {verb}, {len(report.removed)} removed, "
              f"{len(report.quarantined)} quarantined, {len(report.live)} held by live processes")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_demo_command(commands: "argparse._SubParsersAction", common: argparse.ArgumentParser) -> None:
    p = commands.add_parser("demo", parents=[common], help="run a small multi-process pipeline through a queue",
                            description="Producers put items into a queue folder, consumers take them; "
                                        "prints what moved, how fast, and that nothing was lost.")
    p.add_argument("--items", type=_positive, default=200_000, help="items to move (default 200,000)")
    p.add_argument("--producers", type=_positive, default=2, help="producer processes (default 2)")
    p.add_argument("--consumers", type=_positive, default=2, help="consumer processes (default 2)")
    p.add_argument("--codec", choices=["pickle", "json"], default="pickle", help="codec (default pickle)")
    p.add_argument("--folder", help="queue folder to use (default: a temporary one, removed afterwards)")
    p.set_defaults(run=demo)


def add_recover_command(commands: "argparse._SubParsersAction", common: argparse.ArgumentParser) -> None:
    p = commands.add_parser("recover", parents=[common], help="re-queue the files of processes that died",
                            description="Re-queues orphaned loading_/chosen_ files as ready_, removes empty "
                                        "ones and renames damaged ones to bad_. Safe while the queue runs: "
                                        "files of live processes are never touched.")
    p.add_argument("folder", help="the queue folder")
    p.add_argument("--dry-run", action="store_true", help="only list what would be done")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=recover_command)


#: Each adds one subcommand; a new command is a function here and a line in this list.
COMMANDS = [add_demo_command, add_recover_command]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="turbo-queue", description="A crash-safe, file-sharded queue for many processes.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="print less")
    common.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(commands, common)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING if not args.verbose else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=logging.ERROR if args.quiet else level, format="%(levelname)s %(message)s")
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
