"""``turbo-queue stats``: the figures of queue folders once, as text, JSON or Prometheus."""

from __future__ import annotations

import argparse
import json
import shutil
import sys

from . import _exit
from ._args import add_command, add_sample_argument, unique_folders


DESCRIPTION = """\
One look at each queue folder: files by state, backlog in items, age of the oldest ready batch, live
and orphaned files, and the Kafka connectors running on it (a source's lag per partition and
whether it is paused, a sink's in-flight and delivered counts), from their status files. With --sample it watches the folders first and adds what was handed over and
consumed meanwhile. --json prints a document whose schema is described in the README (its "schema"
key is its version); --prometheus prints the Prometheus text format. Only reads: takes no lock,
renames nothing.
"""
EXAMPLES = """\
  turbo-queue stats /var/queues/events
  turbo-queue stats /var/queues/in /var/queues/out --json | jq '.queues[].backlog_items'
  turbo-queue stats /var/queues/in --json | jq '.queues[].connectors[] | select(.kind == "source") | .lag'
  turbo-queue stats /var/queues/events --json --sample 10      with rates over 10 s
  turbo-queue stats /var/queues/events --prometheus > /var/lib/node_exporter/turbo_queue.prom
"""
EXITS = (
    (_exit.OK, "done: every folder was read"),
    (_exit.BAD_DATA, "a file is not a readable batch (listed as unreadable; the rest is printed)"),
    (_exit.USAGE, "bad arguments, or a folder that does not exist (the other folders are printed)"),
    (_exit.PERMISSION, "permission denied"),
    (_exit.INTERRUPTED, "interrupted (Ctrl-C)"),
)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = add_command(commands, common, "stats", help="the figures of queue folders once, as text, JSON or Prometheus",
                    description=DESCRIPTION, examples=EXAMPLES, exits=EXITS)
    p.add_argument("folders", nargs="+", metavar="FOLDER", help="queue folder(s)")
    output = p.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print a JSON document (see the README for its schema)")
    output.add_argument("--prometheus", action="store_true", help="print the Prometheus text exposition format")
    add_sample_argument(p, "watch the folders this long first, to count what is handed over and consumed (default 0)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..monitor import blocks_for, prometheus_text, render, sample, stats_document

    figures = sample(unique_folders(args.folders), args.sample)
    code = _exit.problems(figures, "stats")
    if args.json:
        print(json.dumps(stats_document(figures, args.sample), indent=2))
    elif args.prometheus:
        sys.stdout.write(prometheus_text(figures, counters=args.sample > 0))
    else:
        width = shutil.get_terminal_size().columns
        lines = render(figures, width, blocks=blocks_for(sys.stdout))
        print("\n".join(text for text, _ in lines))
    return code
