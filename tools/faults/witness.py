"""The inotify witness: every change of a queue folder, checked as it happens."""

from __future__ import annotations

import os
import select
import threading
from typing import List, Optional, Set, Tuple

from turbo_queue import _folder, _platform

from .folder import JOURNAL_SUFFIXES
from .processes import DEADLINE, Unavailable

_IN = _platform.Inotify


class Witness:
    """Sees every create, delete and rename in a folder, in order, across all processes (inotify).

    It checks two rules at each change: a batch never has two names at once (for instance both
    ready_ and chosen_), and no ``ready_`` file appears while a journal of the same batch exists,
    nor a journal beside a ``ready_`` file (R1: a journal separated from its database corrupts it).
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.violations: List[str] = []
        self.events = 0
        try:
            self._inotify = _IN(nonblocking=True)
        except OSError as exc:
            raise Unavailable(str(exc)) from None
        try:
            self._inotify.add_watch(folder, _IN.MOVED_FROM | _IN.MOVED_TO | _IN.CREATE | _IN.DELETE)
        except OSError as exc:
            self._inotify.close()
            raise Unavailable(str(exc)) from None
        self._fd = self._inotify.fd
        self._present: Set[str] = set(os.listdir(folder))
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="chaos-witness", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            ready, _, _ = select.select([self._fd, self._stop_r], [], [])
            if self._fd in ready:
                self._read()
            if self._stop_r in ready:
                self._read()
                return

    def _read(self) -> None:
        while True:
            events = self._inotify.read()
            if not events:
                return
            for _wd, mask, name in events:
                self._event(mask, name.decode(errors="surrogateescape"))

    def _event(self, mask: int, name: str) -> None:
        self.events += 1
        if mask & _IN.Q_OVERFLOW:
            self.violations.append("the inotify queue overflowed: some changes were not seen")
            return
        if mask & (_IN.DELETE | _IN.MOVED_FROM):
            self._present.discard(name)
            return
        if not mask & (_IN.CREATE | _IN.MOVED_TO):
            return
        self._present.add(name)
        uid, state, journal = self._parse(name)
        if uid is None:
            return
        if journal:
            if state == _folder.READY:
                self.violations.append(f"a journal appeared beside a ready_ file: {name}")
            return
        for other in self._present:
            if other == name:
                continue
            o_uid, o_state, o_journal = self._parse(other)
            if o_uid != uid:
                continue
            if o_journal and state == _folder.READY:
                self.violations.append(f"{name} appeared while {other} exists")
            elif not o_journal:
                self.violations.append(f"batch {uid} has two names: {other} and {name}")

    @staticmethod
    def _parse(name: str) -> Tuple[Optional[str], Optional[str], bool]:
        journal = name.endswith(JOURNAL_SUFFIXES)
        base = name.rsplit("-", 1)[0] if journal else name
        parsed = _folder.parse_name(base)
        if parsed is None:
            return None, None, False
        return parsed.uid, parsed.state, journal

    def close(self) -> List[str]:
        """Stop watching; the violations seen (events already queued are read first)."""
        os.write(self._stop_w, b"x")
        self._thread.join(DEADLINE)
        for fd in (self._fd, self._stop_r, self._stop_w):
            os.close(fd)
        return self.violations
