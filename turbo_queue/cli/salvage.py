"""``turbo-queue salvage``: the intact chunks of a damaged batch file, given back as a new ready_ batch."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from typing import Any, Dict

from .. import _folder
from . import _exit
from ._args import add_command

DESCRIPTION = """\
Reads every intact chunk of a damaged batch file (a bad_ one, or any) and writes their
unacknowledged items into a new ready_ batch in the file's folder, where consumers take them; then
says which items it could not read. It asks SQLite first and then reads the file's pages itself,
so a file SQLite calls malformed (truncated, or with damaged pages) still gives back every chunk
that is whole: each one is checked against the CRC-32 it was written with. The damaged file is
never changed: remove it yourself once the new batch is right (salvaging it again would deliver
its items again). The new batch appears whole or not at all.

Exit code 0 when every unacknowledged item was given back, 1 when some (or all) could not be read
or the file's meta table (which says how many items it holds) could not be read.
"""
EXAMPLES = """\
  turbo-queue salvage /var/queues/events/bad_1732400000_0b6c9a4e-5d2f-4c1e-9a8b-3f1d2e4c5b6a.db
  turbo-queue salvage bad_1732400000_0b6c9a4e-5d2f-4c1e-9a8b-3f1d2e4c5b6a.db --dry-run --json
"""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = add_command(commands, common, "salvage", help="give back the intact items of a damaged batch file",
                    description=DESCRIPTION, examples=EXAMPLES)
    p.add_argument("file", metavar="BAD_FILE", help="the damaged batch file")
    p.add_argument("--codec", help="the codec of its items, when its meta table cannot be read "
                                   "(default: the first codec that decodes its first intact chunk)")
    p.add_argument("--dry-run", action="store_true", help="only say what would be given back")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .. import _salvage
    from .._codecs import get_codec

    path = os.path.abspath(args.file)
    if not os.path.isfile(path):
        print(f"turbo-queue salvage: {args.file}: no such file", file=sys.stderr)
        return _exit.USAGE
    folder, name = os.path.split(path)
    try:
        salvage = _salvage.read(path)
    except PermissionError:
        print(f"turbo-queue salvage: {args.file}: permission denied", file=sys.stderr)
        return _exit.PERMISSION
    try:
        codec = get_codec(args.codec) if args.codec else _salvage.guess_codec(salvage)
    except ValueError as exc:
        print(f"turbo-queue salvage: {exc}", file=sys.stderr)
        return _exit.USAGE
    chunks, skip = salvage.unacknowledged()
    items = sum(chunk.n for chunk in chunks) - skip
    missing = salvage.missing()
    outcome: Dict[str, Any] = {
        "file": path, "codec": codec.name if codec else None, "meta_read": "count" in salvage.meta,
        "chunks": len(chunks), "chunks_read_by_sqlite": salvage.by_sqlite, "items": items,
        "acked": salvage.acked, "missing": [{"first": first, "last": last} for first, last in missing],
        "problems": salvage.problems, "salvaged_into": None,
    }
    parsed = _folder.parse_name(name)
    if chunks and codec is None:
        outcome["problems"].append("no codec decodes its chunks: give one with --codec")
    elif codec is not None and chunks and not args.dry_run:
        try:
            outcome["salvaged_into"] = _salvage.write(salvage, codec, folder, parsed.epoch if parsed else None)
        except PermissionError:
            print(f"turbo-queue salvage: {folder}: permission denied (the new batch is written there)",
                  file=sys.stderr)
            return _exit.PERMISSION
        except (OSError, sqlite3.Error) as exc:
            print(f"turbo-queue salvage: writing the new batch in {folder} failed ({exc}); nothing was written",
                  file=sys.stderr)
            return _exit.BAD_DATA
    # Complete only if the meta table said how many items there are: else none may be known missing.
    complete = (outcome["meta_read"] and not missing
                and (not chunks or outcome["salvaged_into"] is not None or args.dry_run))
    if args.json:
        print(json.dumps(outcome, indent=2))
    else:
        _print(args, outcome, parsed is not None and parsed.state != _folder.BAD)
    return _exit.OK if complete else _exit.BAD_DATA


def _print(args: argparse.Namespace, outcome: Dict[str, Any], live_name: bool) -> None:
    chunks, items = outcome["chunks"], outcome["items"]
    verb = "would give back" if args.dry_run else "gave back"
    where = f" in {outcome['salvaged_into']}" if outcome["salvaged_into"] else ""
    print(f"{outcome['file']}: {verb} {items:,} items ({chunks:,} intact chunks, {outcome['chunks_read_by_sqlite']:,} "
          f"of them read by SQLite, the rest from its pages){where}")
    for run in outcome["missing"]:
        count = run["last"] - run["first"] + 1
        print(f"could not read: items {run['first']}..{run['last']} ({count:,} items)")
    if not outcome["meta_read"]:
        print("its meta table could not be read: every intact chunk is given back, acknowledged or not, "
              "and items after the last one found may be missing")
    if not args.quiet:
        for problem in outcome["problems"]:
            print(f"  {problem}")
        if outcome["salvaged_into"]:
            print("the damaged file is left as it is: remove it once the new batch is right "
                  "(salvaging it again would deliver its items again)")
        if live_name:
            print("note: its name is not bad_: if a consumer also reads it, its items come twice")
