"""Which ``loading_``/``chosen_`` files live processes hold, from ``/proc/locks``.

The kernel's table of locks, matched with the files' inodes. No flock is probed: a probe takes
the lock for an instant, and a producer or consumer could lose its file to it.
"""

from __future__ import annotations

import os
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple


def parse_locks(text: str) -> Dict[Tuple[int, int, int], int]:
    """``(major, minor, inode) -> pid`` for every flock held in ``/proc/locks`` text.

    A line reads ``1: FLOCK  ADVISORY  WRITE 4242 fe:00:9977884 0 EOF``; the device numbers are
    hex. Waiters (``1: -> FLOCK ...``) hold nothing and are skipped.
    """
    held: Dict[Tuple[int, int, int], int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        try:
            major, minor, inode = fields[5].split(":")
            held[(int(major, 16), int(minor, 16), int(inode))] = int(fields[4])
        except ValueError:
            continue
    return held


def read_locks() -> Optional[Dict[Tuple[int, int, int], int]]:
    """The flocks held on this machine now, or None where ``/proc/locks`` cannot be read."""
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            return parse_locks(f.read())
    except OSError:
        return None


def _lock_key(info: os.stat_result) -> Tuple[int, int, int]:
    return os.major(info.st_dev), os.minor(info.st_dev), info.st_ino


class Holders(NamedTuple):
    """Who holds the ``loading_``/``chosen_`` files of a folder (see ``holders``)."""

    live: Dict[str, int]  # name -> pid of the process holding its flock (0: the kernel did not say)
    orphaned: List[str]  # nobody holds them: their process died
    gone: List[str]  # renamed or deleted since the listing: their owner moved on (so it was alive)


def holders(folder: str, names: Iterable[str]) -> Optional[Holders]:
    """Which of ``names`` (``loading_``/``chosen_`` files of ``folder``) live processes hold.

    None where this system has no ``/proc/locks``. An owner holds its file's flock for as long
    as the file has a ``loading_``/``chosen_`` name, but the lock table and the folder cannot be
    read at one instant. So a file found unlocked is looked at again: it is an orphan only if the
    lock table read *after* the first look still shows no lock and the file is unchanged (same
    inode, ctime and size: no rename, no write) since.
    """
    first = read_locks()
    if first is None:
        return None
    found = Holders({}, [], [])
    suspects: Dict[str, os.stat_result] = {}
    for name in names:
        info = _look(folder, name, found)
        if info is None:
            continue
        pid = first.get(_lock_key(info))
        if pid is None:
            suspects[name] = info
        else:
            found.live[name] = pid
    if suspects:
        second = read_locks() or {}
        for name, before in suspects.items():
            now = _look(folder, name, found)
            if now is None:
                continue
            pid = second.get(_lock_key(now))
            if pid is not None:
                found.live[name] = pid
            elif (now.st_ino, now.st_ctime_ns, now.st_size) == (before.st_ino, before.st_ctime_ns, before.st_size):
                found.orphaned.append(name)
            else:
                found.live[name] = 0  # it changed between the looks: somebody is working on it
    found.orphaned.sort()
    return found


def _look(folder: str, name: str, found: Holders) -> Optional[os.stat_result]:
    """``name``'s lstat, or None when it was renamed or deleted (then it is noted as gone)."""
    try:
        return os.lstat(os.path.join(folder, name))
    except FileNotFoundError:
        found.gone.append(name)
        return None
