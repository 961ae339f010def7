"""The figures as text for a person: ``render`` (the picture of ``monitor`` and ``stats``),
``sparkline``, ``ls_columns``."""

from __future__ import annotations

import math
from typing import Iterable, List, Optional, Sequence, TextIO, Tuple

from .. import _status
from .connectors import ConnectorStatus
from .figures import QueueFigures

BLOCKS = "▁▂▃▄▅▆▇█"
ASCII_BLOCKS = "_.-:=+*#"


def sparkline(values: Sequence[int], blocks: str = BLOCKS) -> str:
    """One character per value, its height relative to the largest; zero is the lowest block."""
    top = max(values, default=0)
    if top <= 0:
        return blocks[0] * len(values)
    steps = len(blocks) - 1
    return "".join(blocks[0] if v <= 0 else blocks[max(1, math.ceil(v / top * steps))] for v in values)


def ls_columns(names: Sequence[str], width: int) -> List[str]:
    """``names`` laid out in columns, top to bottom, as GNU ``ls -C`` does in ``width`` columns
    (with spaces where ``ls`` would use tabs, i.e. ``ls -C -T 0``)."""
    n = len(names)
    if n == 0:
        return []
    lengths = [len(name) for name in names]
    best_cols, best_widths = 1, [max(lengths)]
    for cols in range(min(n, max(1, width // 3)), 1, -1):
        rows = -(-n // cols)
        widths = [0] * cols
        for i, length in enumerate(lengths):
            col = i // rows
            widths[col] = max(widths[col], length + (0 if col == cols - 1 else 2))
        if sum(widths) < width:
            best_cols, best_widths = cols, widths
            break
    rows = -(-n // best_cols)
    lines = []
    for row in range(rows):
        parts = []
        for col in range(best_cols):
            i = col * rows + row
            if i >= n:
                break
            last = i + rows >= n
            parts.append(names[i] if last else names[i].ljust(best_widths[col]))
        lines.append("".join(parts))
    return lines


def _rate(value: float) -> str:
    if value == 0:
        return "0"
    if value < 10:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min {seconds % 60} s"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def plural(n: int, word: str, words: str = "") -> str:
    return f"{n:,} " + (word if n == 1 else words or word + "s")


def _pids(pids: Iterable[int]) -> str:
    known = sorted({pid for pid in pids if pid})
    if not known:
        return ""
    shown = ", ".join(str(pid) for pid in known[:6]) + (", …" if len(known) > 6 else "")
    return f" (pid{'s' if len(known) > 1 else ''} {shown})"


def render_queue(figures: QueueFigures, width: int, blocks: str = BLOCKS, listing: bool = False,
                 waiting: bool = False, listing_rows: Optional[int] = None) -> List[Tuple[str, str]]:
    """The lines that describe one queue, each with a style: '', 'title', 'alert' or 'dim'.

    ``waiting``: the caller waits for a missing folder to appear (the live view) and says so.
    ``listing_rows``: at most this many lines of the listing (the rest is counted).
    """
    lines: List[Tuple[str, str]] = [(figures.folder, "title")]
    if not figures.exists:
        lines.append(("  no such folder (yet): waiting for it to appear" if waiting else "  no such folder", "alert"))
        return lines
    if figures.error:
        lines.append((f"  {figures.error}", "alert"))
        return lines
    files = figures.files
    lines.append((f"  files      loading {files['loading']:,}   ready {files['ready']:,}   "
                  f"chosen {files['chosen']:,}   bad {files['bad']:,}", "alert" if files["bad"] else ""))
    counted = files["ready"] + files["chosen"] - figures.uncounted_batches
    backlog = f"  backlog    {plural(figures.backlog_items, 'item')} in {plural(counted, 'batch', 'batches')}"
    if figures.uncounted_batches:
        backlog += f" (+{figures.uncounted_batches:,} unreadable)"
    age = figures.oldest_ready_age
    backlog += "   oldest ready: " + ("none" if age is None else _age(age))
    lines.append((backlog, ""))
    flows = (("handed over", figures.handed_over, figures.handed_over_total, figures.handed_over_history),
             ("consumed", figures.consumed, figures.consumed_total, figures.consumed_history))
    for label, now, total, history in flows:
        if now is None or total is None:
            lines.append((f"  {label:<11} not measured (watch the queue: monitor, or --sample SECONDS)", "dim"))
            continue
        rates = f"  {label:<11} {_rate(now.batches_per_second):>6} batches/s  {_rate(now.items_per_second):>9} items/s"
        totals = f"total {plural(total.batches, 'batch', 'batches')}, {plural(total.items, 'item')}"
        if total.uncounted:
            one = total.uncounted == 1
            totals += (f" (+{total.uncounted:,} {'batch' if one else 'batches'} gone before "
                       f"{'it' if one else 'they'} could be counted)")
        # The sparkline takes the room left (one character a second, 10 to 40 of them); on a
        # narrow terminal the totals are cut first.
        room = width - len(rates) - len(totals) - 4
        spark = sparkline(history[-min(40, max(10, room)):], blocks) if width >= 60 else ""
        lines.append((f"{rates}  {spark}  {totals}" if spark else f"{rates}  {totals}", ""))
    if figures.live is None or figures.orphaned is None:
        lines.append(("  processes  unknown here (no /proc/locks)", "dim"))
    else:
        live = figures.live
        producers = [pid for name, pid in live.items() if name.startswith("loading_")]
        consumers = [pid for name, pid in live.items() if name.startswith("chosen_")]
        lines.append((f"  live       {plural(len(producers), 'loading_ file')}{_pids(producers)}   "
                      f"{plural(len(consumers), 'chosen_ file')}{_pids(consumers)}", ""))
        if figures.orphaned:
            lines.append((f"  orphaned   {plural(len(figures.orphaned), 'file')} whose process died, "
                          f"waiting for recovery (turbo-queue recover FOLDER, or any consumer):", "alert"))
            lines.extend((f"    {name}", "alert") for name in figures.orphaned)
        else:
            lines.append(("  orphaned   none", ""))
    for connector in figures.connectors:
        lines.extend(render_connector(connector, figures.time))
    for problem in (figures.problems + figures.connector_problems)[:5]:
        lines.append((f"  unreadable {problem}", "alert"))
    if listing and figures.names is not None:
        lines.append((f"  $ ls -C  ({plural(len(figures.names), 'file')})", "dim"))
        columns = ls_columns(figures.names, width)
        if listing_rows is not None and len(columns) > listing_rows:
            shown = max(0, listing_rows - 1)
            lines.extend((line, "") for line in columns[:shown])
            lines.append((f"… {plural(len(columns) - shown, 'more line')} of the listing: make the terminal "
                          f"taller", "dim"))
        else:
            lines.extend((line, "") for line in columns)
    return lines


#: A status older than this many seconds is pointed out: its connector rewrites it about every second.
STALE_STATUS = 10.0
#: At most this many partitions of a source are listed, one a line.
MOST_PARTITIONS = 16
_INDENT = " " * 13


def _count(value: Optional[int], word: str = "") -> str:
    """``value`` with thousands separators ("?": not known), and ``word`` after it, plural but for 1."""
    if not word:
        return "?" if value is None else f"{value:,}"
    return f"? {word}s" if value is None else plural(value, word)


def render_connector(connector: ConnectorStatus, now: float) -> List[Tuple[str, str]]:
    """The lines that describe one Kafka connector running on a queue folder."""
    counts = connector.counts
    age = connector.age(now)
    said = "" if age is None else f"   status {_age(age)} old"
    where = f" at {connector.bootstrap_servers}" if connector.bootstrap_servers else ""
    lines: List[Tuple[str, str]] = []
    if connector.kind == _status.SOURCE:
        lag = connector.lag
        lines.append((f"  source     pid {connector.pid}   group {connector.group or '?'}   "
                      f"topics {', '.join(connector.topics) or '?'}{where}{said}", ""))
        lines.append((f"{_INDENT}{_count(counts.get('messages_in'), 'message')} in   "
                      f"{_count(counts.get('commits'), 'commit')}   lag {_count(lag)}   "
                      f"{_count(counts.get('set_aside'))} set aside   {_count(counts.get('dead_lettered'))} dead-lettered   "
                      f"{_count(counts.get('pauses'), 'pause')}", ""))
        if connector.paused:
            lines.append((f"{_INDENT}paused: the folder's backlog is at its limit (the lag waits in Kafka)", "alert"))
        if connector.partitions:
            width = max(len(f"{p.topic} [{p.partition}]") for p in connector.partitions[:MOST_PARTITIONS])
            lines.append((f"{_INDENT}{'partition':<{width}}  {'committed':>13}  {'high watermark':>14}  {'lag':>11}",
                          "dim"))
            for p in connector.partitions[:MOST_PARTITIONS]:
                committed = "none" if p.committed is None and p.lag is not None else _count(p.committed)
                lines.append((f"{_INDENT}{f'{p.topic} [{p.partition}]':<{width}}  {committed:>13}  "
                              f"{_count(p.high_watermark):>14}  {_count(p.lag):>11}" + ("  paused" if p.paused else ""),
                              ""))
            hidden = len(connector.partitions) - MOST_PARTITIONS
            if hidden > 0:
                lines.append((f"{_INDENT}… {plural(hidden, 'more partition')}", "dim"))
        else:
            lines.append((f"{_INDENT}no partition assigned (yet)", "dim"))
    else:
        dead_letter = f" (dead letters to {connector.dead_letter})" if connector.dead_letter else ""
        lines.append((f"  sink       pid {connector.pid}   topic {connector.topic or '?'}{where}{dead_letter}{said}",
                      ""))
        lines.append((f"{_INDENT}{_count(connector.in_flight)} in flight   {_count(counts.get('delivered'))} delivered   "
                      f"{_count(counts.get('errors'), 'error')}   {_count(counts.get('set_aside'))} set aside   "
                      f"{_count(counts.get('dead_lettered'))} dead-lettered   {_count(counts.get('retried'))} retried",
                      ""))
        if connector.last_error:
            lines.append((f"{_INDENT}last error: {connector.last_error}", ""))
    if age is not None and age > STALE_STATUS:
        lines.append((f"{_INDENT}its status was rewritten {_age(age)} ago: the connector may be stuck", "alert"))
    return lines


def render(figures: Sequence[QueueFigures], width: int, *, listing: bool = False, blocks: str = BLOCKS,
           header: str = "", waiting: bool = False, height: Optional[int] = None) -> List[Tuple[str, str]]:
    """The whole picture: a header line, then each queue, separated by a blank line.

    ``waiting`` as ``render_queue`` says. ``height``: the lines there is room for; the listings
    share what the figures leave, so that one folder's listing does not push the next folder out.
    """
    rows: Optional[int] = None
    if listing and height is not None:
        bare = render(figures, width, blocks=blocks, header=header, waiting=waiting)
        listed = [one for one in figures if one.exists and not one.error and one.names is not None]
        rows = max(0, height - len(bare) - len(listed)) // max(1, len(listed))  # each listing has a title line
    lines: List[Tuple[str, str]] = []
    if header:
        lines.append((header, "dim"))
    for i, one in enumerate(figures):
        if i or header:
            lines.append(("", ""))
        lines.extend(render_queue(one, width, blocks, listing, waiting, rows))
    return lines


def blocks_for(stream: TextIO) -> str:
    """The sparkline's blocks, or ASCII ones where ``stream``'s encoding cannot show them."""
    try:
        BLOCKS.encode(stream.encoding or "ascii")
        return BLOCKS
    except (UnicodeEncodeError, LookupError):
        return ASCII_BLOCKS
