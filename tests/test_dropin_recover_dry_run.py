"""``turbo-queue recover --dry-run`` says what ``recover`` will do, and changes nothing."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

from tests.support import snapshot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
UID = "00000000-0000-4000-8000-0000000000{:02d}"


def recover(folder: str, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "turbo_queue", "recover", folder, *options], capture_output=True,
                          text=True, timeout=60, env=ENV)


def orphans(folder: str) -> None:
    """An orphan of each kind: re-queued, removed (empty, with a journal), quarantined (random bytes)."""
    code = f"""
import os, turbo_queue
from turbo_queue import _folder
with turbo_queue.Enqueuer({folder!r}) as q:
    q.put_many(list(range(10)))
ready = [n for n in os.listdir({folder!r}) if n.startswith("ready_")][0]
os.rename(os.path.join({folder!r}, ready), os.path.join({folder!r}, "chosen_" + ready[len("ready_"):]))
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=ENV)
    # an empty loading_ file whose producer died inside its first transaction: a hot journal
    empty = os.path.join(folder, f"loading_1700000000_{UID.format(1)}.db")
    conn = sqlite3.connect(empty, isolation_level=None)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    with open(empty + "-journal", "wb") as f:
        f.write(open(empty, "rb").read() or b"x")
    for n, state in ((2, "loading"), (3, "chosen")):
        with open(os.path.join(folder, f"{state}_1700000000_{UID.format(n)}.db"), "wb") as f:
            f.write(os.urandom(4096))


def test_the_dry_run_reports_what_the_real_run_does_and_changes_nothing(tmp_path):
    folder = str(tmp_path / "q")
    os.mkdir(folder)
    orphans(folder)
    before = snapshot(folder)
    dry = recover(folder, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert snapshot(folder) == before  # not a byte changed, journals included
    real = recover(folder, "--json")
    assert real.returncode == 0, real.stderr
    would, did = json.loads(dry.stdout), json.loads(real.stdout)
    for key in ("requeued", "removed", "quarantined", "converted", "refused", "live"):
        assert sorted(would[key]) == sorted(did[key]), key
    assert len(did["requeued"]) == 1
    assert {f"{state}_1700000000_{UID.format(n)}.db" for n, state in ((2, "loading"), (3, "chosen"))} <= set(
        did["quarantined"])


def test_each_requeue_is_printed_once(tmp_path):
    folder = str(tmp_path / "q")
    os.mkdir(folder)
    orphans(folder)
    done = recover(folder)
    assert done.returncode == 0
    lines = (done.stdout + done.stderr).splitlines()
    requeued = [line for line in lines if "re-queued" in line and "chosen_" in line]
    assert len(requeued) == 1, lines
    verbose = recover(folder, "-v")
    assert verbose.returncode == 0
