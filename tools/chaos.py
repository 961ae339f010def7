#!/usr/bin/env python3
"""chaos: inject faults into turbo_queue on purpose, many times, and count what was lost.

Each scenario breaks the queue in one way (SIGKILL at a random moment or at the N-th call of a
chosen system call, a full disk, failed writes, damaged or foreign files, forks, poison items,
permissions), again and again, and counts per item what was lost, duplicated or unexpected.
After every run each remaining batch file is checked with ``PRAGMA integrity_check``, and while
processes run an inotify witness checks every change of the folder as it happens: no ``ready_``
file may appear while a journal of the same batch exists (R1), and no batch may have two names.

    python tools/chaos.py                  # the medium run: a few minutes, prints a table
    python tools/chaos.py --quick          # what CI runs (tests/test_faults.py calls the same code)
    python tools/chaos.py --long           # more runs, and a soak of ten million items over 10 minutes
    python tools/chaos.py --only soak --soak-items 5000000
    python -m tools.chaos --quick          # the same, as a module

The scenarios live in tools/faults/, one module per family; this is their command line.

Exit status: 0 when nothing was lost and every check held, 1 otherwise, 2 when a scenario could
not run here (strace missing, not root for mount), 130 on Ctrl-C. Kill points at a system call
use strace's fault injection (``-e inject=SYSCALL:signal=KILL:when=N``); the disk-full scenario
mounts a small tmpfs (root). The table's heading shows the seed: ``--seed`` replays the run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
from typing import List, Optional

if __name__ == "__main__" and not __package__:  # run as a script, python tools/chaos.py: import from the checkout
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from tools.faults import CHILDREN, SCENARIOS, Result, run_scenario, table  # noqa: E402


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        logging.basicConfig(level=logging.WARNING)
        CHILDREN[argv[1]](json.loads(argv[2]))
        return 0
    parser = argparse.ArgumentParser(
        prog="chaos.py", description=__doc__.split("\n\n")[0],
        epilog="scenarios: " + ", ".join(SCENARIOS) + ".\nExample: python tools/chaos.py --only consumer_syscall_kill,soak "
               "--runs 500", formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", const="quick", dest="profile", help="the short runs CI does")
    size.add_argument("--long", action="store_const", const="long", dest="profile",
                      help="hundreds of runs per scenario and a soak of ten million items")
    parser.add_argument("--only", default="", help="comma-separated scenario names (default: all)")
    parser.add_argument("--runs", type=int, help="runs per scenario, instead of the profile's")
    parser.add_argument("--soak-items", type=int, help="items the soak hands over (default 1,000,000)")
    parser.add_argument("--soak-kill-every", type=float, nargs=2, metavar=("MIN", "MAX"),
                        help="seconds between two kills in the soak, drawn between MIN and MAX")
    parser.add_argument("--seed", type=int, help="replay a run (each scenario prints its seed)")
    parser.add_argument("--workdir", help="where the queue folders go (default: the temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folders")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("-v", "--verbose", action="store_true", help="show turbo_queue's log and progress")
    parser.add_argument("-q", "--quiet", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    profile = args.profile or "medium"
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
    logger = logging.getLogger("turbo_queue")
    if args.verbose:
        logging.basicConfig(level=logging.INFO)
    else:
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
    seed = random.randrange(2**32) if args.seed is None else args.seed
    results: List[Result] = []
    try:
        for name in names:
            if not args.quiet:
                print(f"{SCENARIOS[name][0]} ... ", end="", file=sys.stderr, flush=True)
            result = run_scenario(name, profile=profile, seed=seed, root=args.workdir, runs=args.runs,
                                  soak_items=args.soak_items,
                                  soak_kill_every=tuple(args.soak_kill_every) if args.soak_kill_every else None,
                                  keep=args.keep)
            results.append(result)
            if not args.quiet:
                state = "not run" if result.unavailable else ("ok" if result.ok else "FAIL")
                print(f"{state} ({result.runs} runs, {result.seconds:.0f} s)", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        print(f"turbo_queue chaos, profile {profile}, seed {seed}\n")
        print(table(results))
        notes = [(r.scenario, n) for r in results for n in r.notes]
        if notes:
            print()
            for scenario, text in notes:
                print(f"- {scenario}: {text}")
        for r in results:
            for failure in r.failures:
                print(f"\nFAIL {r.scenario}: {failure}")
            if r.unavailable:
                print(f"\nNOT RUN {r.scenario}: {r.unavailable}")
    if any(not r.ok and not r.unavailable for r in results):
        return 1
    return 2 if any(r.unavailable for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
