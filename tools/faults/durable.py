"""Scenario 13: what durable=True relies on, checked on the system calls strace records."""

from __future__ import annotations

import collections
import os
import queue
import re
import subprocess
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from turbo_queue import Dequeuer, Enqueuer, _folder

from .context import Context, scenario
from .folder import JOURNAL_SUFFIXES
from .processes import DEADLINE, child, child_argv, require_strace
from .tally import Result


TRACED = "fsync,fdatasync,rename,renameat,renameat2,openat,unlink,unlinkat,flock,close,pwrite64,ftruncate,write"


_LINE = re.compile(r"^(?P<pid>\d+)\s+(?P<call>\w+)\((?P<args>.*?)(?:\)\s+=\s+(?P<ret>.*)| <unfinished \.\.\.>)$")


_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


_FD = re.compile(r"^(\d+)<(.*?)>")


@child("durable_trace")
def child_durable_trace(p: dict) -> None:
    """A durable roll, a claim, a hand-back and a delete, with a marker written after each returns."""
    folder, marker = p["folder"], os.open(p["marker"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    producer = Enqueuer(folder, durable=True, max_batch_delay=3600, chunk_size=4)
    producer.put_many([{"id": i} for i in range(10)])
    producer.flush()
    os.write(marker, b"flushed\n")
    producer.close()
    consumer = Dequeuer(folder, durable=True, ack_every=1, recover_every=3600)
    got = [consumer.get(timeout=10)["id"] for _ in range(6)]
    os.write(marker, b"got\n")
    consumer.close()  # hands the rest back: records the position, renames to ready_
    os.write(marker, b"closed\n")
    consumer = Dequeuer(folder, durable=True, ack_every=1, recover_every=3600)
    got += [item["id"] for item in consumer.get_many(100, timeout=10)]
    try:
        consumer.get(block=False)  # every item acknowledged: the batch is deleted
    except queue.Empty:
        pass
    os.write(marker, b"drained\n")
    consumer.close()
    if got != list(range(10)):
        raise SystemExit(f"got {got}")


@dataclass
class Call:
    index: int
    pid: int
    call: str
    fd: Optional[int]
    fd_path: str
    paths: List[str]
    args: str
    ret: str


def parse_trace(text: str) -> List[Call]:
    calls: List[Call] = []
    for line in text.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue  # a "resumed" line, a signal, an exit
        args = match["args"]
        fd_match = _FD.match(args)
        calls.append(Call(len(calls), int(match["pid"]), match["call"], int(fd_match[1]) if fd_match else None,
                          fd_match[2] if fd_match else "", _QUOTED.findall(args), args, match["ret"] or ""))
    return calls


def _batch_of(path: str) -> Tuple[Optional[str], Optional[str], bool]:
    """(uid, state, is_journal) of a batch file path, the hidden creating file counting as loading."""
    name = os.path.basename(path.replace(" (deleted)", ""))
    journal = name.endswith(JOURNAL_SUFFIXES)
    if journal:
        name = name.rsplit("-", 1)[0]
    if name.startswith(_folder.CREATING):
        name = _folder.LOADING + "_" + name[len(_folder.CREATING):]
    parsed = _folder.parse_name(name)
    return (parsed.uid, parsed.state, journal) if parsed else (None, None, journal)


def check_durable_trace(calls: List[Call], folder: str, marker: str) -> Tuple[List[str], List[str]]:
    """The rules durable=True relies on, checked on the recorded system calls; (violations, summary).

    A crash can come between any two calls, and after power loss only what was fsynced is sure
    to be there. So at every point of the sequence: a ready_ name never exists for a file with
    writes not yet fsynced, or with a journal beside it (R1); a claim takes the flock before its
    rename; the rename that hands a batch over or back, and the unlink that deletes one,
    are followed by an fsync of the folder before the call that made them returns (the marker
    the program writes after each call); the flock is released only after SQLite closed the file
    (R4). ``summary`` is the sequence for the first batch, for a person to read.
    """
    problems: List[str] = []
    dirty: Dict[str, bool] = collections.defaultdict(bool)
    journal: Dict[str, bool] = collections.defaultdict(bool)
    locks: Dict[Tuple[int, int], str] = {}  # (pid, fd) -> uid of a batch locked with flock
    sqlite_fds: Dict[Tuple[int, int], str] = {}  # (pid, fd) -> uid, descriptors SQLite opened
    pending: List[Tuple[int, str]] = []  # changes waiting for an fsync of the folder
    summary: List[str] = []
    first: Optional[str] = None

    def note(text: str) -> None:
        if summary and summary[-1].split(" x")[0] == text:
            head, _, times = summary[-1].partition(" x")
            summary[-1] = f"{head} x{int(times or 1) + 1}"
        else:
            summary.append(text)

    for call in calls:
        target = call.fd_path or (call.paths[0] if call.paths else "")
        uid, state, is_journal = _batch_of(target)
        hidden = os.path.basename(target).startswith(_folder.CREATING)
        label = (".creating_" if hidden else f"{state}_") + ("-journal" if is_journal else "")
        if call.call == "write" and call.fd_path == marker:
            returned = call.paths[0].replace("\\n", "") if call.paths else "?"
            for index, what in pending:
                problems.append(f"{what} (call {index}) had no fsync of the folder before the call returned ({returned})")
            pending = []
            note(f"<{returned} returns>")
            continue
        if call.call in ("fsync", "fdatasync") and call.fd_path.rstrip("/") == folder:
            pending = []
            note(f"{call.call}(folder)")
            continue
        if uid is None:
            continue
        if first is None:
            first = uid
        mine = uid == first
        if call.call in ("pwrite64", "ftruncate", "write"):  # write: a whole file made in memory
            if not is_journal:
                dirty[uid] = True
            if mine:
                note(f"{call.call}({label})")
        elif call.call in ("fsync", "fdatasync"):
            if not is_journal:
                dirty[uid] = False
            if mine:
                note(f"{call.call}({label})")
        elif call.call == "openat" and re.match(r"\d+", call.ret):
            fd = int(re.match(r"\d+", call.ret)[0])
            if is_journal:
                if "O_CREAT" in call.args:
                    journal[uid] = True
                    if state == _folder.READY:
                        problems.append(f"call {call.index}: a journal was created beside a ready_ file")
                    if mine:
                        note(f"openat({label}, O_CREAT)")
            elif "O_EXCL" not in call.args and "O_NONBLOCK" not in call.args:  # not the protocol's own opens
                sqlite_fds[(call.pid, fd)] = uid
        elif call.call in ("unlink", "unlinkat"):
            if is_journal:
                journal[uid] = False
            else:
                pending.append((call.index, f"the unlink of {os.path.basename(target)}"))
            if mine:
                note(f"unlink({label})")
        elif call.call.startswith("rename") and len(call.paths) >= 2:
            new_uid, new_state, _ = _batch_of(call.paths[1])
            if new_uid is not None and new_uid != uid:  # a hidden file renamed over a loading_ one
                dirty[new_uid] = dirty[uid]
                uid = new_uid
                mine = uid == first
            if new_state == _folder.READY:
                if dirty[uid]:
                    problems.append(f"call {call.index}: {os.path.basename(call.paths[1])} was handed over with writes "
                                    f"not yet fsynced: after power loss the ready_ file may not be whole")
                if journal[uid]:
                    problems.append(f"call {call.index}: {os.path.basename(call.paths[1])} was handed over with a "
                                    f"journal beside it (R1)")
            if new_state == _folder.CHOSEN and not any(u == uid and pid == call.pid for (pid, _), u in locks.items()):
                problems.append(f"call {call.index}: a claim renamed {uid} before taking its flock")
            if new_state in (_folder.READY, _folder.BAD):
                pending.append((call.index, f"the rename to {os.path.basename(call.paths[1])}"))
            if mine:
                note(f"rename({label} -> {new_state}_)")
        elif call.call == "flock" and "LOCK_EX" in call.args and call.ret.strip() == "0" and call.fd is not None:
            locks[(call.pid, call.fd)] = uid
            if mine:
                note(f"flock({label}, LOCK_EX)")
        elif call.call == "close" and call.fd is not None:
            key = (call.pid, call.fd)
            if key in locks:
                held = locks.pop(key)
                if any(u == held and pid == call.pid for (pid, _), u in sqlite_fds.items()):
                    problems.append(f"call {call.index}: the flock of {held} was released while SQLite still had the "
                                    f"file open (R4: close the lock descriptor last)")
                if mine:
                    note(f"close({label} lock)")
            elif key in sqlite_fds:
                sqlite_fds.pop(key)
                if mine:
                    note(f"close({label} SQLite)")
    return problems, summary


@scenario("durable", "13. durable: system call order (strace)")
def scenario_durable(ctx: Context, result: Result) -> None:
    """13. durable=True, recorded for real with strace: each roll fsyncs the file before the rename
    and the folder after it; a claim locks before it renames; a hand-back and a delete fsync the
    folder before they return; at no point does a ready_ name point at unsynced data or a journal."""
    strace = require_strace()
    for run in ctx.each_run(result, 10, 2, 40):
        folder = run.folder
        marker, out = run.report("marker"), run.report("trace.txt")
        proc = subprocess.run([strace, "-f", "-qq", "-y", "-s", "64", "-o", out, "-e", "trace=" + TRACED]
                              + child_argv("durable_trace", folder=folder, marker=marker),
                              capture_output=True, text=True, timeout=DEADLINE)
        result.items += 10
        if proc.returncode != 0:
            run.fail(f"the traced program failed: {proc.stderr[-600:]}")
            continue
        with open(out) as f:
            calls = parse_trace(f.read())
        problems, summary = check_durable_trace(calls, os.path.realpath(folder), os.path.realpath(marker))
        for problem in problems:
            run.fail(problem)
        renames = [c for c in calls if c.call.startswith("rename") and any("ready_" in p for p in c.paths[1:2])]
        dir_syncs = [c for c in calls if c.call == "fsync" and c.fd_path.rstrip("/") == os.path.realpath(folder)]
        if len(renames) < 2 or len(dir_syncs) < 3:
            run.fail(f"the trace shows {len(renames)} renames to ready_ and {len(dir_syncs)} folder fsyncs: "
                     f"the check proved nothing")
        if run.number == 0:
            result.notes.append("recorded for the first batch: " + ", ".join(summary))
        if os.listdir(folder):
            run.fail(f"left: {os.listdir(folder)}")
