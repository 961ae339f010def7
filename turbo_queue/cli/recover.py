"""``turbo-queue recover``: put back the files of processes that died."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import List

from ..recovery import recover
from . import _exit
from ._args import add_command


DESCRIPTION = """\
Re-queues orphaned loading_/chosen_ files as ready_, removes empty ones and renames damaged ones to
bad_. Safe while the queue runs: files of live processes are never touched. With --stale it also
removes the folders of anonymous queues (Queue() without path) that no live process uses.
"""
EXAMPLES = """\
  turbo-queue recover /var/queues/events              put back the files of processes that died
  turbo-queue recover /var/queues/events --dry-run --json
  turbo-queue recover --stale                         what killed anonymous queues left in /dev/shm
"""
EXITS = (
    (_exit.OK, "done (also when there was nothing to do)"),
    (_exit.USAGE, "bad arguments, or no such folder"),
    (_exit.PERMISSION, "permission denied"),
    (_exit.INTERRUPTED, "interrupted (Ctrl-C)"),
)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = add_command(commands, common, "recover", help="re-queue the files of processes that died",
                    description=DESCRIPTION, examples=EXAMPLES, exits=EXITS)
    p.add_argument("folder", nargs="?", metavar="FOLDER", help="the queue folder")
    p.add_argument("--stale", action="store_true",
                   help="also remove the folders of anonymous queues (Queue() without path, in /dev/shm) "
                        "that no live process uses: what a creator killed by SIGTERM or SIGKILL left")
    p.add_argument("--dry-run", action="store_true", help="only list what would be done")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run, parser=p)


def run(args: argparse.Namespace) -> int:
    stale: List[str] = []
    if args.stale:
        from ..queues import remove_stale_anonymous

        if args.dry_run:
            print("turbo-queue recover: --stale removes folders; it has no --dry-run", file=sys.stderr)
            return _exit.USAGE
        stale = remove_stale_anonymous()
        if not args.json:
            for path in stale:
                print(f"removed (anonymous queue nobody uses): {path}")
        if args.folder is None:
            if args.json:
                print(json.dumps({"stale_removed": stale}, indent=2))
            return _exit.OK
    if args.folder is None:
        args.parser.error("give a FOLDER, or --stale")  # exits 2 with the usage line
    if not os.path.isdir(args.folder):
        print(f"turbo-queue recover: {args.folder}: no such folder", file=sys.stderr)
        return _exit.USAGE
    library = logging.getLogger("turbo_queue")
    if not args.verbose:  # the report below says each thing once; -v adds the library's own lines
        library.setLevel(logging.CRITICAL)
    try:
        report = recover(args.folder, dry_run=args.dry_run)
    except PermissionError as exc:
        print(f"turbo-queue recover: {exc.filename or args.folder}: permission denied (run as a user who may "
              f"write the queue folder)", file=sys.stderr)
        return _exit.PERMISSION
    finally:
        library.setLevel(logging.NOTSET)
    if args.json:
        print(json.dumps({**report.as_dict(), **({"stale_removed": stale} if args.stale else {})}, indent=2))
        return _exit.OK
    verb = "would re-queue" if args.dry_run else "re-queued"
    converted = "would convert (turbo-queue 0.5.2/0.8.0)" if args.dry_run else "converted (turbo-queue 0.5.2/0.8.0)"
    for label, names in ((verb, report.requeued), (converted, report.converted), ("removed (empty)", report.removed),
                         ("quarantined as bad_", report.quarantined), ("left alone (newer format or journal)", report.refused)):
        for name in names:
            print(f"{label}: {name}")
    if not args.quiet:
        old = f"{len(report.converted)} converted, " if report.converted else ""
        print(f"{report.folder}: {len(report.requeued)} {verb}, {old}{len(report.removed)} removed, "
              f"{len(report.quarantined)} quarantined, {len(report.live)} held by live processes")
    return _exit.OK
