"""Scenarios 7 and 8: damaged batch files, and entries in the folder that are not the protocol's
(directories, links, FIFOs, sockets, a device, unreadable files, odd names)."""

from __future__ import annotations

import collections
import json
import os
import random
import shutil
import socket
import sqlite3
import stat
import subprocess
import time
import uuid
from typing import List

from turbo_queue import _folder, _batchfile, recover

from .context import Context, scenario
from .folder import batch_name, drain, groups, integrity, raw_meta, set_meta, snapshot, write_batch
from .processes import DEADLINE, Unavailable, child, child_argv
from .tally import Result, record, tally


DAMAGES = ("truncated", "bitflip", "zero", "garbage", "text", "header", "newer", "count", "acked")


def damage(path: str, kind: str, rng: random.Random) -> None:
    size = os.path.getsize(path)
    if kind == "truncated":
        os.truncate(path, rng.randrange(0, size))
    elif kind == "bitflip":
        with open(path, "r+b") as f:
            for _ in range(rng.randint(1, 16)):
                pos = rng.randrange(size)
                f.seek(pos)
                byte = f.read(1)[0]
                f.seek(pos)
                f.write(bytes([byte ^ (1 << rng.randrange(8))]))
    elif kind == "zero":
        os.truncate(path, 0)
    elif kind == "garbage":
        with open(path, "wb") as f:
            f.write(os.urandom(rng.randint(1, 20_000)))
    elif kind == "text":
        with open(path, "w") as f:
            f.write("this is not a batch file\n" * rng.randint(1, 500))
    elif kind == "header":
        with open(path, "r+b") as f:
            f.write(os.urandom(100))
    elif kind == "newer":
        set_meta(path, "format", _batchfile.FORMAT_VERSION + 1)
    elif kind == "count":
        count = int(raw_meta(path)["count"])
        set_meta(path, "count", rng.choice([count - rng.randint(1, count), count + rng.randint(1, 50)]))
    elif kind == "acked":
        set_meta(path, "acked", int(raw_meta(path)["count"]) + rng.randint(1, 50))


@scenario("damaged", "7. damaged ready_ files")
def scenario_damaged(ctx: Context, result: Result) -> None:
    """7. A damaged ready_ file between two good ones: it becomes bad_ (a newer format is refused and
    left as it is), the good ones are delivered, and no item is dropped silently."""
    rng = ctx.rng
    outcomes = collections.Counter()
    for run in ctx.each_run(result, 300, 60, 1000):
        folder = run.folder
        kind = DAMAGES[run.number] if run.number < len(DAMAGES) else rng.choice(DAMAGES)
        run.label += f" ({kind})"
        context = run.label
        now = int(time.time())
        files = {}
        for tag, epoch, start in (("before", now - 30, 0), ("damaged", now - 20, 10**5), ("after", now - 10, 2 * 10**5)):
            ids = list(range(start, start + rng.randint(1, 800)))
            files[tag] = (write_batch(folder, ids, _folder.READY, chunk=rng.choice([1, 10, 100]), epoch=epoch), ids)
        damaged_name, damaged_ids = files["damaged"]
        damaged_path = os.path.join(folder, damaged_name)
        damage(damaged_path, kind, rng)
        with open(damaged_path, "rb") as f:
            damaged_bytes = f.read()
        # a flipped bit in the format's value can make it a newer format, refused like one
        refused = kind == "newer" or reads_as_newer(damaged_path)
        try:
            got = drain(folder)
        except Exception as exc:
            result.fail(f"{context}: the consumer raised {type(exc).__name__}: {exc}")
            got = []
        good = set(files["before"][1]) | set(files["after"][1])
        wanted = {i: {"id": i} for i in good | set(damaged_ids)}
        ids = [item.get("id") if isinstance(item, dict) else None for item in got]
        intact = [i for i, item in zip(ids, got) if i in wanted and item == wanted[i]]
        # a flipped bit can also turn an item of the damaged file into another one of its items
        twice = collections.Counter(intact)
        changed_into_another = sum(c - 1 for i, c in twice.items() if c > 1 and i in set(damaged_ids))
        altered = len(got) - len(intact) + changed_into_another
        intact = list(twice)
        missing_good = good - set(intact)
        record(result, context + " (the undamaged files)", items=len(good) + len(damaged_ids), lost=len(missing_good),
               duplicated=sum(c - 1 for i, c in twice.items() if c > 1 and i in good), examples=missing_good)
        found = groups(folder)
        uid = _folder.parse_name(damaged_name).uid
        kept_whole = any(_folder.parse_name(n).uid == uid for n in found["bad"])
        aside = 0
        for name in found["bad"]:
            path = os.path.join(folder, name)
            if _folder.parse_name(name).uid == uid:
                continue
            meta = raw_meta(path)
            source = _folder.parse_name(str(meta.get("set_aside_from", "")))
            if source is None or source.uid != uid:
                result.fail(f"{context}: unexpected bad_ file {name}")
            aside += int(meta["count"]) - int(meta["acked"])
            if integrity(path) != ["ok"]:
                result.integrity_failures += 1
                result.fail(f"{context}: the set-aside file {name} fails integrity_check")
        if refused:
            if found["ready"] != [damaged_name] or open(damaged_path, "rb").read() != damaged_bytes:
                result.fail(f"{context}: a newer format was not left as it was")
            outcome = "refused"
        else:
            if found["ready"] or found["chosen"] or found["loading"]:
                result.fail(f"{context}: left {found['ready'] + found['chosen'] + found['loading']}")
            delivered_damaged = len(set(intact) & set(damaged_ids))
            silently_dropped = len(damaged_ids) - delivered_damaged - altered - aside
            if not kept_whole and silently_dropped > 0:
                record(result, f"{context} (the damaged file: {len(damaged_ids)} put, {delivered_damaged} delivered, "
                       f"{altered} changed, {aside} set aside, neither delivered nor kept in a bad_ file)",
                       lost=silently_dropped)
            outcome = "bad_" if kept_whole else ("chunk set aside" if aside else "delivered")
        # every chunk carries a checksum: a changed item must never come out
        record(result, f"{context} (items that came out changed)", unexpected=altered)
        outcomes[(kind, outcome)] += 1
        result.bad_files += len(found["bad"])
    summary = collections.defaultdict(list)
    for (kind, outcome), count in sorted(outcomes.items()):
        summary[kind].append(f"{outcome} {count}")
    result.notes.append("; ".join(f"{kind}: {', '.join(parts)}" for kind, parts in summary.items()))


def reads_as_newer(path: str) -> bool:
    """Whether the file's meta table reads, and names a format newer than this code's."""
    try:
        version = raw_meta(path).get("format")
    except (sqlite3.Error, UnicodeDecodeError):  # damaged text (schema or value) is not UTF-8
        return False
    return isinstance(version, int) and version > _batchfile.FORMAT_VERSION


NO_DAC = ["--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]


def without_dac_override() -> List[str]:
    """A command prefix that runs a program as root without the power to read everything
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH dropped), so that file modes apply to it."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        raise Unavailable("needs root and setpriv (util-linux) to run a process that file modes apply to")
    return [setpriv] + NO_DAC


def plant_foreign(folder: str, elsewhere: str, rng: random.Random) -> List[str]:
    """Entries that are not the protocol's though some are named like batches; their names."""
    names: List[str] = []
    now = int(time.time()) - 100  # older than the real batches: a consumer meets them first

    def name(state: str) -> str:
        n = batch_name(state, now)
        names.append(n)
        return os.path.join(folder, n)

    for state in rng.sample(["ready", "loading", "chosen", "bad"], rng.randint(1, 4)):
        os.mkdir(name(state))
        with open(os.path.join(folder, names[-1], "inside.txt"), "w") as f:
            f.write("not a batch")
    for state in rng.sample(["ready", "loading", "chosen"], rng.randint(1, 3)):
        target = os.path.join(elsewhere, write_batch(elsewhere, [-1, -2], _folder.READY))
        os.symlink(target, name(state))
    for state in rng.sample(["ready", "loading"], rng.randint(1, 2)):
        os.mkfifo(name(state))
    for state in rng.sample(["ready", "chosen", "loading"], rng.randint(1, 3)):
        path = name(state)
        folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        sock = socket.socket(socket.AF_UNIX)
        try:  # through the folder's descriptor: a socket's path must be short (108 bytes)
            sock.bind(f"/proc/self/fd/{folder_fd}/{os.path.basename(path)}")
        finally:
            sock.close()
            os.close(folder_fd)
    for state in rng.sample(["ready", "loading", "chosen"], rng.randint(1, 3)):
        # a sound batch this user may not read (mode 000): it must be left alone, not crash anything
        real = write_batch(folder, [-3, -4], state if state != "chosen" else _folder.READY)
        path = name(state)
        os.rename(os.path.join(folder, real), path)
        os.chmod(path, 0)
    if os.geteuid() == 0:
        os.mknod(name("ready"), 0o644 | stat.S_IFCHR, os.makedev(1, 3))  # like /dev/null
    uid = str(uuid.uuid4())
    for odd in ("notes.txt", "ready_x.db", f"loading_1_{uid.upper()}.db", f"ready_{now}_{uid}.db.bak",
                f"chosen_{now}_not-a-uuid.db", ".creating_notes", f"ready_{now}_{uid}.db-journal"):
        with open(os.path.join(folder, odd), "wb") as f:
            f.write(os.urandom(rng.randint(0, 3000)))
        names.append(odd)
    return names


@child("foreign_consume")
def child_foreign_consume(p: dict) -> None:
    """recover(), recover(dry_run=True) and drain the folder; print the items got and the reports."""
    dry = recover(p["folder"], dry_run=True)
    report = recover(p["folder"])
    got = [item["id"] for item in drain(p["folder"])]
    print(json.dumps({"got": got, "report": report.as_dict(), "dry": dry.as_dict()}))


@scenario("foreign", "8. foreign entries in the folder")
def scenario_foreign(ctx: Context, result: Result) -> None:
    """8. Directories, symlinks, FIFOs, sockets, a device, files this user may not read and odd names,
    some named like batches, beside real batches: none is touched, nothing crashes, every item comes."""
    rng = ctx.rng
    prefix = without_dac_override()
    for run in ctx.each_run(result, 30, 4, 100):
        folder = run.folder
        foreign = plant_foreign(folder, run.another_folder(), rng)
        before = snapshot(folder, foreign)
        expected = list(range(500))
        write_batch(folder, expected[:200], _folder.READY)
        write_batch(folder, expected[200:350], _folder.LOADING)  # an orphan: recovery re-queues it
        write_batch(folder, expected[350:], _folder.READY)
        proc = subprocess.run(prefix + child_argv("foreign_consume", folder=folder), capture_output=True,
                              text=True, timeout=DEADLINE)
        if proc.returncode != 0:
            result.items += len(expected)
            run.fail(f"the consumer crashed ({proc.returncode}): {proc.stderr[-800:]}")
        else:
            out = json.loads(proc.stdout.splitlines()[-1])
            tally(result, run.label, expected, out["got"])
            touched = set(out["report"]["requeued"] + out["report"]["removed"] + out["report"]["quarantined"]) & set(foreign)
            if touched:
                run.fail(f"recover() acted on foreign entries: {sorted(touched)[:3]}")
        after = snapshot(folder, [n for n in foreign if os.path.lexists(os.path.join(folder, n))])
        if after != before:
            changed = sorted(n for n in before if before.get(n) != after.get(n))
            run.fail(f"foreign entries were changed or removed: {changed[:4]}")
        left = [n for n in os.listdir(folder) if n not in foreign]
        if left:
            run.fail(f"left besides the foreign entries: {left[:4]}")
