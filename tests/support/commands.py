"""Running ``turbo-queue`` commands as programs: to their end, as an exporter on a free port, or in
a real pseudo-terminal (the monitor and Kafka tests share these)."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import urllib.error
import urllib.request
from typing import Callable, Dict, List, Optional, Tuple

from .processes import DEADLINE
from .waiting import wait_for

CLI = [sys.executable, "-m", "turbo_queue"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run(*args: str, timeout: float = DEADLINE, env: Optional[Dict[str, str]] = None,
        user: Optional[Tuple[List[str], Dict[str, str]]] = None) -> subprocess.CompletedProcess:
    """Run the command to its end, with this interpreter or as ``user`` (its interpreter command and
    environment, from the ``unprivileged`` fixture)."""
    python, user_env = user or ([sys.executable], {})
    full_env = {**os.environ, "COLUMNS": "200", **user_env, **(env or {})}
    proc = subprocess.Popen([*python, *CLI[1:], *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=full_env, start_new_session=True, cwd="/")
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{args} did not finish within {timeout} s\nstdout:\n{out}\nstderr:\n{err}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


class Exporter:
    """``turbo-queue exporter`` on a free loopback port."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([*CLI, "exporter", *args, "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        match = re.search(r"at (http://127\.0\.0\.1:\d+)/metrics$", line.strip())
        if not match:
            self.proc.kill()
            raise AssertionError(f"no banner: {line!r} {self.proc.stderr.read()}")  # type: ignore[union-attr]
        self.url = match.group(1)

    def get(self, path: str = "/metrics") -> tuple:
        try:
            with urllib.request.urlopen(self.url + path, timeout=DEADLINE) as response:
                return response.status, response.headers["Content-Type"], response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()

    def metrics(self) -> Dict[tuple, float]:
        from prometheus_client.parser import text_string_to_metric_families

        status, kind, body = self.get()
        assert status == 200 and kind == "text/plain; version=0.0.4; charset=utf-8"
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(body) for s in family.samples}

    def wait_for(self, predicate: Callable[[Dict[tuple, float]], bool], what: str) -> Dict[tuple, float]:
        """The metrics, once ``predicate`` holds for them."""
        def matching() -> Optional[Dict[tuple, float]]:
            metrics = self.metrics()
            return metrics if predicate(metrics) else None
        return wait_for(matching, what, interval=0.02)

    def stop(self, sig: int = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=DEADLINE)
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()  # type: ignore[union-attr]
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=DEADLINE)


def m(name: str, folder: str, **labels: str) -> tuple:
    return name, tuple(sorted({"queue": folder, **labels}.items()))


# Makes the pseudo-terminal the controlling terminal of the new session, as a login does, then
# becomes the command: Ctrl-C typed on the terminal then sends it SIGINT.
_CONTROLLING = ("import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
                "os.execv(sys.executable, [sys.executable, '-m', 'turbo_queue', *sys.argv[1:]])")


class Terminal:
    """The command running in a real pseudo-terminal of ``rows`` x ``cols``."""

    def __init__(self, *args: str, rows: int = 40, cols: int = 120) -> None:
        self.master, self.slave = os.openpty()
        self.resize(rows, cols)
        self.before = termios.tcgetattr(self.slave)
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
        env.update(TERM="xterm-256color", PYTHONIOENCODING="utf-8")
        self.proc = subprocess.Popen([sys.executable, "-c", _CONTROLLING, *args], stdin=self.slave, stdout=self.slave,
                                     stderr=self.slave, start_new_session=True, env=env)
        self.output = bytearray()

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))  # and SIGWINCH

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def _read(self, timeout: float) -> None:
        readable, _, _ = select.select([self.master], [], [], timeout)
        if readable:
            try:
                self.output += os.read(self.master, 65536)
            except OSError:
                pass

    def screen(self) -> List[str]:
        """The last whole picture drawn, as text lines."""
        text = self.output.decode("utf-8", "replace")
        end = text.rfind("\x1b[J")
        start = text.rfind("\x1b[H", 0, end) if end >= 0 else -1
        if start < 0:  # no picture drawn whole yet (the first one may come in more than one read)
            return []
        return [line.rstrip("\r") for line in ANSI.sub("", text[start:end]).split("\n")]

    def wait_for(self, predicate: Callable[[List[str]], bool], what: str) -> List[str]:
        deadline = time.monotonic() + DEADLINE
        while True:
            screen = self.screen()
            if predicate(screen):
                return screen
            if self.proc.poll() is not None:
                self._read(0.1)
                raise AssertionError(f"the monitor exited {self.proc.returncode} before {what}:\n"
                                     f"{self.output[-3000:]!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; screen:\n" + "\n".join(screen))
            self._read(0.05)

    def wait_exit(self) -> int:
        code = self.proc.wait(timeout=DEADLINE)
        self._read(0.2)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=DEADLINE)
        os.close(self.master)
        os.close(self.slave)


def has(text: str) -> Callable[[List[str]], bool]:
    return lambda screen: any(text in line for line in screen)
