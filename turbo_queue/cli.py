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

from . import _folder, _platform, __version__
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
    if not owned and os.path.isdir(args.folder):
        held = [name for name in os.listdir(args.folder) if _folder.parse_name(name) is not None]
        if held:
            print(f"turbo-queue demo: {args.folder} already holds batches ({held[0]}, ...); "
                  f"the demo needs an empty or new folder", file=sys.stderr)
            return 2
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
        seen: List[bytes] = []
        while len(seen) < consumers:
            try:
                seen.append(results.get(timeout=0.5))
            except queue.Empty:
                failed = [w for w in workers if w.exitcode not in (None, 0)]
                if failed:
                    print(f"turbo-queue demo: a worker process failed (exit code {failed[0].exitcode})",
                          file=sys.stderr)
                    return 1
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


def add_monitor_command(commands: "argparse._SubParsersAction", common: argparse.ArgumentParser) -> None:
    from . import monitor

    p = commands.add_parser(
        "monitor", parents=[common], help="a live view of queue folders: files, backlog, rates, orphans",
        formatter_class=monitor.HelpFormatter,
        description="A live terminal view of each queue: its loading_/ready_/chosen_/bad_ files, the backlog in "
                    "items, the age of the oldest ready batch, batches and items per second published and "
                    "consumed (with a sparkline of the last seconds), which files belong to live processes and "
                    "which are orphaned, waiting for recovery. It is driven by filesystem events and only "
                    "reads: it takes no lock and renames nothing. A folder that does not exist yet is waited "
                    "for. Keys: q quits, l shows or hides the ls -C listing; Ctrl-C quits too (exit 130).",
        epilog="examples:\n"
               "  turbo-queue monitor /var/queues/events\n"
               "  turbo-queue monitor /var/queues/in /var/queues/out --ls\n"
               "  turbo-queue monitor /var/queues/events --once              one look, for scripts\n"
               "  turbo-queue monitor /var/queues/events --once --sample 5   ...with rates over 5 s\n\n"
               + monitor.EXIT_CODES_HELP,
    )
    p.add_argument("folders", nargs="+", metavar="FOLDER", help="queue folder(s) to watch")
    p.add_argument("--ls", action="store_true", help="also show the folder as `ls -C` does")
    p.add_argument("--once", action="store_true", help="print one picture and exit (no terminal needed)")
    p.add_argument("--sample", type=monitor.seconds, default=0.0, metavar="SECONDS",
                   help="with --once: watch this long first, to measure the rates (default 0: no rates)")
    p.set_defaults(run=monitor.monitor_command)


def add_stats_command(commands: "argparse._SubParsersAction", common: argparse.ArgumentParser) -> None:
    from . import monitor

    p = commands.add_parser(
        "stats", parents=[common], help="the figures of queue folders once, as text, JSON or Prometheus",
        formatter_class=monitor.HelpFormatter,
        description="One look at each queue folder: files by state, backlog in items, age of the oldest ready "
                    "batch, live and orphaned files. With --sample it watches the folders first and adds what "
                    "was published and consumed meanwhile. --json prints a document whose schema is described "
                    "in the README (its \"schema\" key is its version); --prometheus prints the Prometheus text "
                    "format. Only reads: takes no lock, renames nothing.",
        epilog="examples:\n"
               "  turbo-queue stats /var/queues/events\n"
               "  turbo-queue stats /var/queues/in /var/queues/out --json | jq '.queues[].backlog_items'\n"
               "  turbo-queue stats /var/queues/events --json --sample 10      with rates over 10 s\n"
               "  turbo-queue stats /var/queues/events --prometheus > /var/lib/node_exporter/turbo_queue.prom\n\n"
               + monitor.EXIT_CODES_HELP,
    )
    p.add_argument("folders", nargs="+", metavar="FOLDER", help="queue folder(s)")
    output = p.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print a JSON document (see the README for its schema)")
    output.add_argument("--prometheus", action="store_true", help="print the Prometheus text exposition format")
    p.add_argument("--sample", type=monitor.seconds, default=0.0, metavar="SECONDS",
                   help="watch the folders this long first, to count what is published and consumed (default 0)")
    p.set_defaults(run=monitor.stats_command)


def add_exporter_command(commands: "argparse._SubParsersAction", common: argparse.ArgumentParser) -> None:
    from . import monitor

    p = commands.add_parser(
        "exporter", parents=[common], help="serve the figures of queue folders to Prometheus over HTTP",
        formatter_class=monitor.HelpFormatter,
        description="Serves the figures of each queue at http://HOST:PORT/metrics in the Prometheus text "
                    "format, one `queue` label per folder, kept up to date from filesystem events; the "
                    "*_total counters count from when the exporter started. It listens on 127.0.0.1 (this "
                    "machine only) unless told otherwise. A folder that does not exist yet is reported as "
                    "turbo_queue_folder_exists 0 until it appears. Stops on Ctrl-C (exit 130) or SIGTERM "
                    "(exit 0).",
        epilog="examples:\n"
               "  turbo-queue exporter /var/queues/events\n"
               "  turbo-queue exporter /var/queues/in /var/queues/out --listen 127.0.0.1:9464\n"
               "  turbo-queue exporter /var/queues/events --listen 0.0.0.0:9464    every interface\n"
               "  curl -s http://127.0.0.1:9464/metrics\n\n"
               + monitor.EXIT_CODES_HELP,
    )
    p.add_argument("folders", nargs="+", metavar="FOLDER", help="queue folder(s) to serve")
    p.add_argument("--listen", default="127.0.0.1:9464", metavar="HOST:PORT",
                   help="address to listen on (default 127.0.0.1:9464; [::1]:PORT for IPv6; port 0: any free port)")
    p.set_defaults(run=monitor.exporter_command)


def add_peek_command(commands: "argparse._SubParsersAction", common: argparse.ArgumentParser) -> None:
    from . import monitor

    p = commands.add_parser(
        "peek", parents=[common], help="show the first items of a batch without taking them",
        formatter_class=monitor.HelpFormatter,
        description="Shows the first unacknowledged items of a batch file, decoded with the codec recorded in "
                    "it, without consuming or changing anything (no lock is taken). Given a queue folder, it "
                    "shows the batch a consumer would take next: the oldest ready_ one. A loading_ file is "
                    "refused: its producer is still writing it. Decoding a pickle batch runs pickle, which can "
                    "run code: peek only at folders you trust, as you would consume them.",
        epilog="examples:\n"
               "  turbo-queue peek /var/queues/events                 the next batch in line\n"
               "  turbo-queue peek /var/queues/events/bad_1732400000_0b6c9a4e-5d2f-4c1e-9a8b-3f1d2e4c5b6a.db -n 3\n"
               "  turbo-queue peek /var/queues/events -n 100 --json\n\n"
               + monitor.EXIT_CODES_HELP,
    )
    p.add_argument("target", metavar="FILE_OR_FOLDER", help="a batch file, or a queue folder")
    p.add_argument("-n", type=_positive, default=10, metavar="N", help="how many items to show (default 10)")
    p.add_argument("--json", action="store_true", help="print a JSON document (items that JSON cannot hold as their repr)")
    p.set_defaults(run=monitor.peek_command)


def add_bench_command(commands: "argparse._SubParsersAction", common: argparse.ArgumentParser) -> None:
    from . import bench

    p = commands.add_parser("bench", parents=[common], help="the side-by-side benchmark (README, Speed)",
                            description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_arguments(p)
    p.set_defaults(run=bench.run)


def add_kafka_source_command(commands: "argparse._SubParsersAction", common: argparse.ArgumentParser) -> None:
    from .kafka import cli_source

    cli_source.add_parser(commands, common)


def add_kafka_sink_command(commands: "argparse._SubParsersAction", common: argparse.ArgumentParser) -> None:
    from .kafka import cli_sink

    cli_sink.add_parser(commands, common)


def add_pipeline_command(commands: "argparse._SubParsersAction", common: argparse.ArgumentParser) -> None:
    from .kafka import cli_pipeline

    cli_pipeline.add_parser(commands, common)


#: Each adds one subcommand; a new command is a function here and a line in this list.
COMMANDS = [
    add_demo_command, add_recover_command, add_bench_command,
    add_monitor_command, add_stats_command, add_exporter_command, add_peek_command,
    add_kafka_source_command, add_kafka_sink_command, add_pipeline_command,
]


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
