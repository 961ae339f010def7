"""``turbo-queue peek``: the first items of a batch, read without taking them."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import stat
import sys

from .. import _folder
from .._errors import BatchFormatError
from . import _exit
from ._args import add_command, positive_int


DESCRIPTION = """\
Shows the first unacknowledged items of a batch file, decoded with the codec recorded in it, without
consuming or changing anything (no lock is taken). Given a queue folder, it shows the batch a
consumer would take next: the oldest ready_ one. A loading_ file is refused: its producer is still
writing it, or died (then recover re-queues it). Decoding a pickle batch runs pickle, which can
run code: peek only at folders you trust, as you would consume them.
"""
EXAMPLES = """\
  turbo-queue peek /var/queues/events                 the next batch in line
  turbo-queue peek /var/queues/events/bad_1732400000_0b6c9a4e-5d2f-4c1e-9a8b-3f1d2e4c5b6a.db -n 3
  turbo-queue peek /var/queues/events -n 100 --json
"""
EXITS = (
    (_exit.OK, "done (also when no ready_ batch waits in the folder)"),
    (_exit.BAD_DATA, "the file is not a readable batch, or is a loading_ one"),
    (_exit.USAGE, "bad arguments, or no such file or folder"),
    (_exit.PERMISSION, "permission denied"),
    (_exit.INTERRUPTED, "interrupted (Ctrl-C)"),
)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = add_command(commands, common, "peek", help="show the first items of a batch without taking them",
                    description=DESCRIPTION, examples=EXAMPLES, exits=EXITS)
    p.add_argument("target", metavar="FILE_OR_FOLDER", help="a batch file, or a queue folder")
    p.add_argument("-n", type=positive_int, default=10, metavar="N", help="how many items to show (default 10)")
    p.add_argument("--json", action="store_true", help="print a JSON document (items that JSON cannot hold as their repr)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..monitor import describe_error, plural, read_items

    target = os.path.abspath(args.target)
    try:
        info = os.stat(target)
    except FileNotFoundError:
        print(f"turbo-queue peek: {args.target}: no such file or folder", file=sys.stderr)
        return _exit.USAGE
    except PermissionError:
        print(f"turbo-queue peek: {args.target}: permission denied", file=sys.stderr)
        return _exit.PERMISSION
    if stat.S_ISDIR(info.st_mode):
        try:
            ready = _folder.ready_in_order(target)
        except PermissionError:
            print(f"turbo-queue peek: {args.target}: permission denied", file=sys.stderr)
            return _exit.PERMISSION
        if not ready:
            if args.json:
                print(json.dumps({"file": None, "items": []}, indent=2))
            elif not args.quiet:
                print(f"{target}: no ready_ batch waits (the queue is empty, or every batch is being read)")
            return _exit.OK
        path = os.path.join(target, ready[0])
    else:
        path = target
    name = os.path.basename(path)
    parsed = _folder.parse_name(name)
    if parsed is not None and parsed.state == _folder.LOADING:
        print(f"turbo-queue peek: {name} {_why_loading(path)}", file=sys.stderr)
        return _exit.BAD_DATA
    try:
        meta, items = read_items(path, args.n)
    except FileNotFoundError:
        print(f"turbo-queue peek: {path}: it was taken or finished meanwhile; try again", file=sys.stderr)
        return _exit.USAGE if path == target else _exit.BAD_DATA
    except PermissionError:
        print(f"turbo-queue peek: {path}: permission denied", file=sys.stderr)
        return _exit.PERMISSION
    except (OSError, sqlite3.Error, BatchFormatError) as exc:
        print(f"turbo-queue peek: {path}: {describe_error(exc)}", file=sys.stderr)
        return _exit.BAD_DATA
    except Exception as exc:  # decoding runs the codec on the file's bytes: any error means "undecodable"
        print(f"turbo-queue peek: {path}: its items cannot be decoded ({type(exc).__name__}: {exc})",
              file=sys.stderr)
        return _exit.BAD_DATA
    count, acked = int(meta["count"]), int(meta["acked"])
    if args.json:
        print(json.dumps({"file": path, "codec": meta["codec"], "count": count, "acked": acked,
                          "created_by": meta.get("created_by"), "items": items}, indent=2, default=_to_json))
        return _exit.OK
    if not args.quiet:
        print(f"{path}")
        print(f"  codec {meta['codec']}, {plural(count, 'item')}, {acked:,} acknowledged, "
              f"created by {meta.get('created_by', '?')}")
        shown = f"the first {len(items):,}" if len(items) < count - acked else f"all {len(items):,}"
        print(f"  {shown} unacknowledged:" if items else "  nothing unacknowledged")
    for i, item in enumerate(items):
        print(f"{acked + i:>8}  {item!r}" if not args.quiet else repr(item))
    return _exit.OK


def _why_loading(path: str) -> str:
    """Why a loading_ file is not shown: a live producer fills it, or its producer died.

    Asked of /proc/locks, which takes no lock: reading the file of a dead producer could roll
    back its journal, a change, and peek changes nothing.
    """
    from ..monitor import holders

    folder = os.path.dirname(path)
    held = holders(folder, [os.path.basename(path)])
    if held is None:  # no /proc/locks here: which of the two cannot be told
        return ("is being filled by its producer, or its producer died (then turbo-queue recover "
                "re-queues it); peek at it once it is ready_")
    if held.orphaned:
        return (f"belongs to a producer that died; `turbo-queue recover {folder}` (or any consumer) re-queues "
                f"it as ready_, then peek at that")
    if held.gone:
        return "was handed over meanwhile; peek at the folder, or at its ready_ name"
    return "is being filled by its producer; peek at it once it is ready_"


def _to_json(value: object) -> object:
    return repr(value)
