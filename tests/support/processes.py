"""Separate Python programs started by a test: one-shot (:func:`run_python`) or talking over
lines of stdin and stdout (:class:`Child`)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
from typing import List, Optional, Sequence

#: How long a test waits for something that should happen within a second or two. Only a hang reaches it.
DEADLINE = 60.0

__all__ = ["DEADLINE", "Child", "run_python"]


def run_python(code: str, *args: str, prefix: Sequence[str] = (), timeout: float = DEADLINE,
               check: bool = True) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (after the command ``prefix``, such as setpriv) to its
    end; its output. With ``check``, AssertionError if it exits other than 0."""
    result = subprocess.run([*prefix, sys.executable, "-c", textwrap.dedent(code), *args],
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"child exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


class Child:
    """A separate Python program running ``code`` with ``args``, talking over lines of stdin and
    stdout. Its output is read by threads, so every wait for a line has a deadline."""

    def __init__(self, code: str, *args: str, cwd: Optional[str] = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
        self._lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self._stderr: List[str] = []
        self._pumps = [threading.Thread(target=self._pump_stdout, daemon=True),
                       threading.Thread(target=self._pump_stderr, daemon=True)]
        for pump in self._pumps:
            pump.start()

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stderr(self) -> str:
        """What the child wrote to stderr so far."""
        return "".join(self._stderr)

    def line(self, timeout: float = DEADLINE) -> str:
        """The next line the child prints, stripped; AssertionError if it prints none in time or exits."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the child printed no line within {timeout} s\nstderr:\n{self.stderr}") from None
        if line is None:
            self.proc.wait(timeout=DEADLINE)
            for pump in self._pumps:
                pump.join(timeout=DEADLINE)
            raise AssertionError(f"the child exited {self.proc.returncode} early\nstderr:\n{self.stderr}")
        return line.strip()

    def expect(self, prefix: str, timeout: float = DEADLINE) -> str:
        """The next line, which must start with ``prefix``: the rest of it, stripped."""
        line = self.line(timeout)
        assert line.startswith(prefix), f"the child printed {line!r}, expected {prefix!r}...\nstderr:\n{self.stderr}"
        return line[len(prefix):].strip()

    def send(self, line: str = "go") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = DEADLINE) -> int:
        """Close its stdin (it goes on past its read of it) and wait for it to exit: its exit code."""
        assert self.proc.stdin is not None
        if not self.proc.stdin.closed:
            self.proc.stdin.close()
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: the program dies at once, flushing and handing back nothing. AssertionError if
        it had already exited (then the kill the test meant did not happen)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        code = self.proc.wait(timeout=DEADLINE)
        assert code == -signal.SIGKILL, f"the child exited {code} before it was killed\nstderr:\n{self.stderr}"

    def close(self) -> None:
        """Kill it if it still runs, and close its pipes (a fixture does this at the end of a test)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=DEADLINE)
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        for pump in self._pumps:  # they end at the pipes' end, now that the child is gone
            pump.join(timeout=DEADLINE)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()
