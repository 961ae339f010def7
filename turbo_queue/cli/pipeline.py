"""``turbo-queue pipeline``: Kafka -> sources -> workers running a function -> sinks -> Kafka, supervised."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any, Callable, Dict

from ..kafka._errors import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from ._args import positive_int
from ._kafka import add_connection

DESCRIPTION = """\
Runs S sources, N workers and K sinks as supervised child processes over two queue folders:
the sources consume --from in consumer group --group into the in-folder, the workers call
module:function on each message and hand what it returns to the out-folder, the sinks produce
that to --to. Workers may outnumber the topic's partitions. A child that dies is started again;
nothing handed over is lost. SIGTERM or SIGINT stops it in order (the sources stop and commit,
the workers drain, the sinks deliver and acknowledge) and exits 0.

The function gets a turbo_queue.kafka.Message (value, key, headers, timestamp, topic,
partition, offset) and returns None (drop), one output or several (a list or a generator); an
output is bytes, str, anything JSON-able, or a Message with key and headers. With --batch (or
@turbo_queue.kafka.batched on the function) it gets a list of Messages. A message the function
raises on goes to --dead-letter with the error in its headers, else into a bad_ batch."""

EPILOG = """\
examples:
  turbo-queue pipeline --bootstrap-servers 127.0.0.1:9092 --from events --to enriched --group enrich \\
      --workers 8 --value json myapp.transforms:enrich
  turbo-queue pipeline ... --folder /var/queues/enrich --dead-letter events-failed myapp.transforms:enrich

exit codes:
  0    stopped cleanly (SIGTERM, SIGINT)
  2    bad arguments (a function that cannot be imported included)
  4    no broker answered, or a topic does not exist, within --connect-timeout
  130  Ctrl-C before the pipeline was running
"""


def add_parser(commands: "argparse._SubParsersAction[Any]", common: argparse.ArgumentParser) -> None:
    """Add the ``pipeline`` command to ``commands``."""
    p = commands.add_parser("pipeline", parents=[common], help="Kafka -> many worker processes -> Kafka, supervised",
                            description=DESCRIPTION, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("function", metavar="module:function", help="the function to run on each message")
    add_connection(p)
    p.add_argument("--from", dest="from_topic", required=True, metavar="TOPIC", help="topic to consume (^regex for a pattern)")
    p.add_argument("--to", dest="to_topic", required=True, metavar="TOPIC", help="topic to produce to")
    p.add_argument("--group", required=True, metavar="G", help="the consumer group")
    p.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1, metavar="N",
                   help="worker processes (default: the number of CPUs)")
    p.add_argument("--sources", type=positive_int, default=1, metavar="S", help="source processes (default 1)")
    p.add_argument("--sinks", type=positive_int, default=1, metavar="K", help="sink processes (default 1)")
    p.add_argument("--folder", metavar="DIR",
                   help="keep the queue folders under DIR (default: a private folder in /dev/shm, removed at the end)")
    p.add_argument("--value", choices=["bytes", "json"], default="bytes",
                   help="bytes: the function gets the value as it is (default); json: decoded")
    p.add_argument("--dead-letter", metavar="TOPIC",
                   help="topic for messages the function fails on, that do not decode or that the broker refuses "
                        "(default: bad_ batches in the folder)")
    p.add_argument("--batch", action="store_true", help="call the function with lists of messages")
    p.add_argument("--max-ready-files", type=positive_int, default=100, metavar="N",
                   help="backlog limit of each folder, in batches (default 100): then the sources pause")
    p.add_argument("--durable", action="store_true", help="fsync each batch before it is handed over")
    p.set_defaults(run=run)


def load_function(spec: str) -> Callable[..., Any]:
    """The function named ``module:function`` (the current folder importable, as with ``python -m``).

    ValueError saying what is wrong when it cannot be imported or is not callable.
    """
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise ValueError(f"expected module:function, got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r} ({exc}); is it on PYTHONPATH or in this folder?") from exc
    target: Any = module
    for part in name.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no {name!r}") from None
    if not callable(target):
        raise ValueError(f"{spec} is not a function (it is {type(target).__name__})")
    return target  # type: ignore[no-any-return]


def run(args: argparse.Namespace) -> int:
    """Run the pipeline until SIGTERM or SIGINT; returns the exit code."""
    from .._errors import NetworkFilesystemError
    from ..kafka._errors import KafkaUnavailable
    from ..kafka.pipeline import Pipeline

    config: Dict[str, str] = dict(args.config)
    try:
        function = load_function(args.function)
        pipeline = Pipeline(
            function, bootstrap_servers=args.bootstrap_servers, from_topic=args.from_topic, to_topic=args.to_topic,
            group=args.group, workers=args.workers, sources=args.sources, sinks=args.sinks, folder=args.folder,
            config=config, value=args.value, dead_letter=args.dead_letter, batch=True if args.batch else None,
            max_ready_files=args.max_ready_files, durable=args.durable, connect_timeout=args.connect_timeout,
            progress=None if not args.quiet else False,
        )
    except ValueError as exc:
        print(f"turbo-queue pipeline: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return pipeline.run()
    except KafkaUnavailable as exc:
        print(f"turbo-queue pipeline: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except (ImportError, NetworkFilesystemError, RuntimeError) as exc:
        print(f"turbo-queue pipeline: {exc}", file=sys.stderr)
        return EXIT_USAGE


__all__ = ["EXIT_OK", "add_parser", "load_function", "run"]
