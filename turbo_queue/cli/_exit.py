"""The exit codes of the ``turbo-queue`` commands (README, "Watching a queue"), named once."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Sequence, Tuple

if TYPE_CHECKING:
    from ..monitor import QueueFigures

OK = 0
#: A file is not a readable batch (exporter: the address cannot be used); the demo lost an item.
BAD_DATA = 1
#: Bad arguments, or a folder or file that does not exist.
USAGE = 2
PERMISSION = 3
#: Ctrl-C, as a shell reports a process killed by SIGINT.
INTERRUPTED = 130

def help_block(*codes: Tuple[int, str]) -> str:
    """The "exit codes:" block of one command's ``--help``: each code it exits with, and why."""
    return "exit codes:\n" + "".join(f"  {code:<3}  {meaning}\n" for code, meaning in codes)


class Terminated(BaseException):
    """SIGTERM arrived: stop as asked, cleaning up on the way out (exit ``OK``)."""


def on_sigterm(signum: int, frame: object) -> None:
    """A SIGTERM handler that raises ``Terminated``."""
    raise Terminated()


def problems(figures: Sequence[QueueFigures], command: str) -> int:
    """Say what is wrong with the folders on stderr; the exit code that goes with it (the highest of
    theirs: a missing or unusable folder, permission denied, or batch files that cannot be read)."""
    code = OK
    for one in figures:
        if not one.exists:
            print(f"turbo-queue {command}: {one.folder}: no such folder", file=sys.stderr)
            code = max(code, USAGE)
        elif one.error == "permission denied":
            print(f"turbo-queue {command}: {one.folder}: permission denied (run as a user who may read the "
                  f"queue folder)", file=sys.stderr)
            code = max(code, PERMISSION)
        elif one.error:
            print(f"turbo-queue {command}: {one.folder}: {one.error}", file=sys.stderr)
            code = max(code, USAGE)
        elif one.problems:
            denied = [problem for problem in one.problems if problem.endswith(": permission denied")]
            bad = len(one.problems) - len(denied)
            if denied:
                print(f"turbo-queue {command}: {one.folder}: {len(denied)} {'files' if len(denied) > 1 else 'file'} "
                      f"could not be read: permission denied (run as a user who may read the queue folder)",
                      file=sys.stderr)
                code = max(code, PERMISSION)
            if bad:
                print(f"turbo-queue {command}: {one.folder}: {bad} "
                      f"{'files are not readable batches' if bad > 1 else 'file is not a readable batch'} "
                      f"(listed as unreadable; turbo-queue peek FILE says why)", file=sys.stderr)
                code = max(code, BAD_DATA)
    return code
