"""``turbo-queue monitor``: a live view of queue folders (the view itself is in ``live``), or one look."""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from . import _exit
from ._args import add_command, add_sample_argument, unique_folders


DESCRIPTION = f"""\
A live terminal view of each queue: its loading_/ready_/chosen_/bad_ files, the backlog in items,
the age of the oldest ready batch, batches and items per second handed over and consumed (with a
sparkline of the last seconds), which files belong to live processes and which are orphaned, waiting
for recovery, and the Kafka connectors running on it (from their status files: a source's lag per
partition and whether it is paused, a sink's in-flight and delivered counts). It is driven by filesystem events and only reads: it takes no lock and renames
nothing. A folder that does not exist yet is waited for. Keys: q quits, l shows or hides the ls -C
listing; Ctrl-C quits too (exit {_exit.INTERRUPTED}).
"""
EXAMPLES = """\
  turbo-queue monitor /var/queues/events
  turbo-queue monitor /var/queues/in /var/queues/out --ls
  turbo-queue monitor /var/queues/events --once              one look, for scripts
  turbo-queue monitor /var/queues/events --once --sample 5   ...with rates over 5 s
"""
EXITS = (
    (_exit.OK, "done: q pressed or SIGTERM in the live view; --once printed every folder"),
    (_exit.BAD_DATA, "--once: a file is not a readable batch (listed as unreadable)"),
    (_exit.USAGE, "bad arguments; --once: a folder that does not exist (the live view waits for it)"),
    (_exit.PERMISSION, "--once: permission denied"),
    (_exit.INTERRUPTED, "interrupted (Ctrl-C)"),
)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = add_command(commands, common, "monitor", help="a live view of queue folders: files, backlog, rates, orphans",
                    description=DESCRIPTION, examples=EXAMPLES, exits=EXITS)
    p.add_argument("folders", nargs="+", metavar="FOLDER", help="queue folder(s) to watch")
    p.add_argument("--ls", action="store_true", help="also show the folder as `ls -C` does")
    p.add_argument("--once", action="store_true", help="print one picture and exit (no terminal needed)")
    add_sample_argument(p, "with --once: watch this long first, to measure the rates (default 0: no rates)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..monitor import blocks_for, render, sample

    folders = unique_folders(args.folders)
    if args.sample and not args.once:
        print("turbo-queue monitor: --sample goes with --once (the live view measures rates all the time)",
              file=sys.stderr)
        return _exit.USAGE
    if args.once:
        figures = sample(folders, args.sample, names=args.ls)
        code = _exit.problems(figures, "monitor")
        width = shutil.get_terminal_size().columns
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(figures[0].time))
        header = "" if args.quiet else f"turbo-queue monitor  {stamp}" + (
            f"  (rates over {args.sample:g} s)" if args.sample > 0 else "")
        lines = render(figures, width, listing=args.ls, blocks=blocks_for(sys.stdout), header=header)
        print("\n".join(text for text, _ in lines))
        return code
    if not sys.stdout.isatty():
        print("turbo-queue monitor: the live view needs a terminal; use --once (or `turbo-queue stats`) "
              "to print the figures once", file=sys.stderr)
        return _exit.USAGE
    from .live import LiveView

    return LiveView(folders, listing=args.ls, quiet=args.quiet).run()
