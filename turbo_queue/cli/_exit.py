"""The exit codes of the ``turbo-queue`` commands (README, "Watching a queue"), named once."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Sequence

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

HELP = f"""exit codes:
  {OK:<3}  done (also: q pressed in the live view, SIGTERM)
  {BAD_DATA:<3}  a file is not a readable batch (exporter: the address cannot be used)
  {USAGE:<3}  bad arguments, or a folder or file that does not exist
  {PERMISSION:<3}  permission denied
  {INTERRUPTED:<3}  interrupted (Ctrl-C)
"""


class Terminated(BaseException):
    """SIGTERM arrived: stop as asked, cleaning up on the way out (exit ``OK``)."""


def on_sigterm(signum: int, frame: object) -> None:
    """A SIGTERM handler that raises ``Terminated``."""
    raise Terminated()


def problems(figures: Sequence[QueueFigures], command: str) -> int:
    """Say what is wrong with the folders on stderr; the exit code that goes with it."""
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
    return code
