"""Argument types and the help formatter shared by the commands."""

from __future__ import annotations

import argparse
import math
import os
from typing import Dict, List, Sequence, Tuple

from . import _exit


class HelpFormatter(argparse.HelpFormatter):
    """Wraps prose paragraphs of the description and epilog; keeps example and table lines as written
    (a paragraph with an indented line)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = text.split("\n\n")
        out = []
        for paragraph in paragraphs:
            if any(line.startswith(" ") for line in paragraph.splitlines()):
                out.append("\n".join(indent + line for line in paragraph.splitlines()))
            else:
                out.append(super()._fill_text(paragraph, width, indent))
        return "\n\n".join(out)


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser,
                name: str, *, help: str, description: str, examples: str,
                exits: Sequence[Tuple[int, str]]) -> argparse.ArgumentParser:
    """Add the subcommand ``name`` with the options of ``common``: its description wrapped, then its
    ``examples`` (lines as written) and its own exit codes (``exits``: each code and why)."""
    return commands.add_parser(name, parents=[common], help=help, formatter_class=HelpFormatter,
                               description=description,
                               epilog="examples:\n" + examples + "\n" + _exit.help_block(*exits))


def add_sample_argument(p: argparse.ArgumentParser, help: str) -> None:
    """``--sample SECONDS``: watch the folders this long first, to measure what moves."""
    p.add_argument("--sample", type=seconds, default=0.0, metavar="SECONDS", help=help)


def seconds(text: str) -> float:
    """An argparse type: a number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, 0 or more, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number, 1 or more."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_listen(text: str) -> Tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``PORT`` (then on 127.0.0.1); ValueError says why not."""
    host, port_text = "127.0.0.1", text
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or not text[close + 1:].startswith(":"):
            raise ValueError(f"{text!r}: write an IPv6 address as [ADDRESS]:PORT")
        host, port_text = text[1:close], text[close + 2:]
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        if not host:
            raise ValueError(f"{text!r} names no host: give 127.0.0.1:PORT (this machine only) "
                             f"or 0.0.0.0:PORT (every interface)")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{text!r}: the port must be a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{text!r}: the port must be between 0 and 65535")
    return host, port


def unique_folders(folders: Sequence[str]) -> List[str]:
    """``folders`` as absolute paths, each once, in the order given."""
    seen: Dict[str, None] = {}
    for folder in folders:
        seen.setdefault(os.path.abspath(folder), None)
    return list(seen)
