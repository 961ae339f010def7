"""The ``turbo-queue`` command (also ``python -m turbo_queue``).

Each command is a module of this package with ``add_parser(commands, common)``, which adds its
subcommand and sets ``run`` as its default, and ``run(args) -> int``. A command imports what is
heavy (the monitor, an HTTP server, multiprocessing) inside ``run``, so that a light command
starts light. A new command is a module and its place in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from .. import __version__
from . import _exit, demo, exporter, kafka_sink, kafka_source, monitor, peek, pipeline, recover, salvage, stats

__all__ = ["COMMANDS", "build_parser", "main"]

EPILOG = """examples:
  turbo-queue demo                          move 200,000 items through a temporary queue
  turbo-queue demo --producers 4 --consumers 4 --items 1000000
  turbo-queue recover /var/queues/events    put back the files of processes that died
  turbo-queue recover /var/queues/events --dry-run --json
"""

#: The command modules, in the order of the help. The Kafka commands' modules live in the kafka
#: package (they import confluent-kafka only inside ``run``).
COMMANDS = (demo, recover, monitor, stats, exporter, peek, salvage, kafka_source, kafka_sink, pipeline)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="turbo-queue", description="A crash-safe, file-batched queue for many processes.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="print less")
    common.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands, common)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command that ``argv`` (default: ``sys.argv[1:]``) names; its exit code."""
    args = build_parser().parse_args(argv)
    level = logging.WARNING if not args.verbose else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=logging.ERROR if args.quiet else level, format="%(levelname)s %(message)s")
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        return _exit.INTERRUPTED
    return code


if __name__ == "__main__":
    sys.exit(main())
