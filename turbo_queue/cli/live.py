"""The live view of ``turbo-queue monitor``: the whole terminal, redrawn from filesystem events."""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from typing import Sequence

from ..monitor import TICK, Session, blocks_for, render
from . import _exit

#: The live view redraws at most this often (seconds), and only when the picture changed.
REDRAW_EVERY = 0.25


class LiveView:
    """The full-screen view: plain ANSI, alternate screen, redrawn on events at most 4 times a second."""

    def __init__(self, folders: Sequence[str], listing: bool, quiet: bool) -> None:
        self.session = Session(folders)
        self.listing = listing
        self.quiet = quiet
        self.out = sys.stdout
        self.fd = self.out.fileno()
        self.keys = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else None
        self.blocks = blocks_for(self.out)
        self.color = "NO_COLOR" not in os.environ and os.environ.get("TERM", "") != "dumb"
        self.resized = True
        self.size = os.terminal_size((80, 24))

    def run(self) -> int:
        import termios
        import tty

        saved = termios.tcgetattr(self.keys) if self.keys is not None else None
        old_winch = signal.signal(signal.SIGWINCH, self._on_winch)
        old_term = signal.signal(signal.SIGTERM, _exit.on_sigterm)
        old_wakeup = -1
        try:
            self.session.start()
            old_wakeup = signal.set_wakeup_fd(self.session.signal_fd)  # a resize wakes the loop at once
            if self.keys is not None:
                tty.setcbreak(self.keys, termios.TCSANOW)  # keys one by one, no echo; Ctrl-C stays SIGINT
            self._write("\x1b[?1049h\x1b[?25l\x1b[2J")  # alternate screen, hide the cursor
            return self._loop()
        except _exit.Terminated:
            return _exit.OK
        finally:
            self._write("\x1b[?25h\x1b[?1049l")  # show the cursor, back to the normal screen
            if saved is not None and self.keys is not None:
                try:
                    termios.tcsetattr(self.keys, termios.TCSADRAIN, saved)
                except termios.error:
                    pass  # the terminal is gone
            signal.set_wakeup_fd(old_wakeup)
            signal.signal(signal.SIGWINCH, old_winch)
            signal.signal(signal.SIGTERM, old_term)
            self.session.stop()

    def _on_winch(self, signum: int, frame: object) -> None:
        self.resized = True

    def _write(self, text: str) -> None:
        try:
            self.out.write(text)
            self.out.flush()
        except OSError:
            pass  # the terminal went away; the loop ends on the next key or signal

    def _loop(self) -> int:
        """Draw when something changed (or the clock says so), at most every ``REDRAW_EVERY``
        seconds: between two pictures, events wait in the queue and do not wake this thread."""
        last_draw = -math.inf
        next_tick = 0.0
        last_frame = ""
        while True:
            self.session.process()
            now = time.monotonic()
            due = now - last_draw >= REDRAW_EVERY
            if due and (self.resized or now >= next_tick or self.session.dirty):
                if now >= next_tick:
                    self.session.tick()
                    next_tick = now + TICK
                if self.resized:
                    self.resized = False
                    try:
                        self.size = os.get_terminal_size(self.fd)
                    except OSError:
                        pass
                    last_frame = ""  # the terminal cleared or reflowed: draw everything
                frame = self._frame()
                if frame != last_frame:
                    self._write(frame)
                    last_frame = frame
                last_draw, due = now, False
            keys = [self.keys] if self.keys is not None else []
            if due:  # nothing to draw: sleep until an event, a key, a signal or the clock
                ready = self.session.wait(next_tick - now, keys)
            else:  # just drawn: sleep until the next picture may be drawn
                ready = self.session.wait(last_draw + REDRAW_EVERY - now, keys, events=False)
            if ready and self.keys is not None:  # the keys are the only fd waited on
                try:
                    typed = os.read(self.keys, 64)
                except OSError:
                    typed = b""
                if not typed or b"q" in typed.lower():
                    return _exit.OK
                if b"l" in typed.lower():
                    self.listing = not self.listing
                    self.resized = True

    def _frame(self) -> str:
        width, height = self.size.columns, self.size.lines
        figures = self.session.figures(self.listing)
        header = f"turbo-queue monitor  {time.strftime('%H:%M:%S')}   q: quit   l: ls -C"
        if self.session.polling:
            header += "   (some folders are looked at every second: no inotify watch)"
        lines = render(figures, max(20, width - 1), listing=self.listing, blocks=self.blocks,
                       header="" if self.quiet else header, waiting=True, height=height)
        if len(lines) > height:
            hidden = len(lines) - height + 1
            lines = lines[: height - 1] + [(f"… {hidden:,} more lines: make the terminal taller", "dim")]
        styles = {"title": "\x1b[1m", "alert": "\x1b[31m", "dim": "\x1b[2m"} if self.color else {}
        parts = ["\x1b[H"]
        for i, (text, style) in enumerate(lines):
            text = text[: max(0, width - 1)]
            code = styles.get(style, "")
            parts.append(f"{code}{text}\x1b[0m" if code else text)
            parts.append("\x1b[K" + ("\r\n" if i < len(lines) - 1 else ""))
        parts.append("\x1b[J")
        return "".join(parts)
