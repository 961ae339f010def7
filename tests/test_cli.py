"""The ``turbo-queue`` command, run for real: ``python -m turbo_queue`` and the installed script."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from typing import List, Optional

import pytest

import turbo_queue
from turbo_queue import Enqueuer

from tests.support import drain, listing, snapshot

SCRIPT = os.path.join(os.path.dirname(sys.executable), "turbo-queue")

#: Generous: each command takes well under a second here. Only a hang reaches it.
DEADLINE = 120.0


@pytest.fixture(params=["python -m turbo_queue", "turbo-queue script"])
def cli(request) -> List[str]:
    """The command line that starts the command, both ways it is installed."""
    if request.param == "turbo-queue script":
        assert os.access(SCRIPT, os.X_OK), f"the console script is not installed next to {sys.executable}"
        return [SCRIPT]
    return [sys.executable, "-m", "turbo_queue"]


def run(cli: List[str], *args: str, cwd: Optional[str] = None, timeout: float = DEADLINE) -> subprocess.CompletedProcess:
    """Run the command to its end. It gets its own process group, so that on a hang it is
    killed with the worker processes it started (and the test fails instead of hanging)."""
    env = dict(os.environ, COLUMNS="200")  # argparse wraps help text at the terminal width
    proc = subprocess.Popen([*cli, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{' '.join(args)} did not finish within {timeout} s (killed)\n"
                             f"stdout:\n{out}\nstderr:\n{err}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def words(text: str) -> str:
    """Text with every run of whitespace made one space (help text is wrapped)."""
    return " ".join(text.split())


# A consumer that claims a batch of 10 items, takes one, and is then killed: its chosen_ file
# is an orphan (no process holds its lock) with all 10 items unacknowledged.
DEAD_CONSUMER = """
    import sys, turbo_queue
    with turbo_queue.Enqueuer(sys.argv[1]) as enqueuer:
        enqueuer.put_many([{"n": i} for i in range(10)])
    dequeuer = turbo_queue.Dequeuer(sys.argv[1])
    print("took", dequeuer.get()["n"], flush=True)
    sys.stdin.readline()
"""

# A producer with a partial batch: 100 items written into its loading_ file, 50 still in memory.
LIVE_PRODUCER = """
    import sys, turbo_queue
    enqueuer = turbo_queue.Enqueuer(sys.argv[1], max_batch_delay=3600)
    enqueuer.put_many([{"p": i} for i in range(150)])
    print("put", flush=True)
    sys.stdin.readline()
    enqueuer.close()
"""


@pytest.fixture
def orphaned(folder: str, children) -> str:
    """The queue folder with one orphaned chosen_ batch (its consumer was killed); its name."""
    consumer = children(DEAD_CONSUMER, folder)
    assert consumer.line() == "took 0"
    consumer.kill()
    (name,) = listing(folder)["chosen"]
    assert os.listdir(folder) == [name]
    return name


# -- demo -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["pickle", "json"])
def test_demo_moves_every_item_once(cli, codec) -> None:
    result = run(cli, "demo", "--items", "5000", "--producers", "2", "--consumers", "2", "--codec", codec)
    assert result.returncode == 0, result.stderr
    assert "lost 0, duplicated 0" in result.stdout, result.stdout
    assert "moved 5,000 items" in result.stdout
    # Its temporary queue folder is named on the first line, and removed at the end.
    match = re.search(r"-> (.+) -> 2 consumer\(s\), 5,000 items", result.stdout.splitlines()[0])
    assert match, result.stdout
    assert not os.path.exists(match.group(1))


def test_demo_with_uneven_shares(cli) -> None:
    result = run(cli, "demo", "--items", "7", "--producers", "3", "--consumers", "4")
    assert result.returncode == 0, result.stderr
    assert "moved 7 items" in result.stdout and "lost 0, duplicated 0" in result.stdout


def test_demo_folder_is_kept(cli, tmp_path) -> None:
    folder = tmp_path / "demo queue"  # not there yet; a space in the name too
    result = run(cli, "demo", "--items", "3000", "--producers", "2", "--consumers", "2", "--folder", str(folder))
    assert result.returncode == 0, result.stderr
    assert "lost 0, duplicated 0" in result.stdout
    assert str(folder) in result.stdout.splitlines()[0]
    assert folder.is_dir()
    assert os.listdir(folder) == []  # every batch was taken and finished


def test_demo_folder_that_exists_is_kept_with_its_other_files(cli, tmp_path) -> None:
    folder = tmp_path / "q"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    result = run(cli, "demo", "--items", "2000", "--folder", str(folder))
    assert result.returncode == 0, result.stderr
    assert "lost 0, duplicated 0" in result.stdout
    assert os.listdir(folder) == ["notes.txt"] and (folder / "notes.txt").read_text() == "mine"


def test_demo_does_not_hang_or_eat_a_folder_that_holds_items(tmp_path) -> None:
    """A folder that already holds a batch (a real queue, or a crashed demo's leftovers).

    Now a demo consumer takes the foreign item, fails on it (``seen[item["id"]]``: IndexError,
    or a TypeError for an item that is not a dict) and dies, and the demo waits forever for
    that consumer's result, having destroyed the foreign item. It should refuse the folder
    (or at least end with an error) and leave the foreign batch alone."""
    folder = str(tmp_path / "q")
    with Enqueuer(folder) as enqueuer:
        enqueuer.put({"id": 10**9, "text": "someone else's item"})
    before = snapshot(folder)
    # One way of starting the command is enough here; a run takes well under a second.
    result = run([sys.executable, "-m", "turbo_queue"], "demo", "--items", "100", "--folder", folder, timeout=30)
    assert result.returncode != 0, result.stdout
    assert snapshot(folder) == before, "the demo consumed or changed a batch it did not put there"


@pytest.mark.parametrize("args", [["--items", "0"], ["--producers", "0"], ["--consumers", "-1"],
                                  ["--items", "many"], ["--codec", "xml"]])
def test_demo_rejects_bad_numbers(cli, args) -> None:
    result = run(cli, "demo", *args)
    assert result.returncode == 2
    assert "usage: turbo-queue demo" in result.stderr and "error:" in result.stderr
    assert result.stdout == ""


# -- recover --------------------------------------------------------------------------------------


def test_recover_requeues_an_orphaned_batch_and_says_so(cli, folder, orphaned) -> None:
    result = run(cli, "recover", folder)
    assert result.returncode == 0, result.stderr
    ready = orphaned.replace("chosen_", "ready_", 1)  # same epoch and uuid, so the same place in line
    assert os.listdir(folder) == [ready]
    assert f"re-queued: {orphaned}" in result.stdout.splitlines()
    assert result.stdout.splitlines()[-1] == f"{folder}: 1 re-queued, 0 removed, 0 quarantined, 0 held by live processes"
    # The killed consumer never acknowledged the item it held: all 10 come back.
    assert drain(folder) == [{"n": i} for i in range(10)]


def test_recover_quiet_prints_only_the_changes(cli, folder, orphaned) -> None:
    result = run(cli, "recover", "--quiet", folder)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"re-queued: {orphaned}"]


def test_recover_with_nothing_to_do(cli, folder) -> None:
    with Enqueuer(folder) as enqueuer:
        enqueuer.put("waiting")
    before = snapshot(folder)
    result = run(cli, "recover", folder)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{folder}: 0 re-queued, 0 removed, 0 quarantined, 0 held by live processes"]
    assert snapshot(folder) == before


def test_recover_relative_folder(cli, folder, orphaned) -> None:
    result = run(cli, "recover", os.path.basename(folder), cwd=os.path.dirname(folder))
    assert result.returncode == 0, result.stderr
    assert listing(folder)["ready"] == [orphaned.replace("chosen_", "ready_", 1)]
    assert result.stdout.splitlines()[-1].startswith(f"{folder}: 1 re-queued")  # the full path in the report


def test_recover_dry_run_changes_nothing(cli, folder, orphaned, children) -> None:
    producer = children(LIVE_PRODUCER, folder)
    assert producer.line() == "put"
    (live,) = listing(folder)["loading"]
    before = snapshot(folder)
    stat_before = {name: os.stat(os.path.join(folder, name)).st_mtime_ns for name in before}

    result = run(cli, "recover", "--dry-run", folder)

    assert result.returncode == 0, result.stderr
    assert snapshot(folder) == before
    assert {name: os.stat(os.path.join(folder, name)).st_mtime_ns for name in before} == stat_before
    lines = result.stdout.splitlines()
    assert f"would re-queue: {orphaned}" in lines
    assert not any(live in line for line in lines)  # a live process's file is not even listed
    assert lines[-1] == f"{folder}: 1 would re-queue, 0 removed, 0 quarantined, 1 held by live processes"

    assert producer.finish() == 0  # the producer was not disturbed: its batch arrives whole
    items = drain(folder)
    assert sorted(items, key=repr) == sorted([{"n": i} for i in range(10)] + [{"p": i} for i in range(150)], key=repr)


RECOVERY_KEYS = {"folder", "dry_run", "requeued", "converted", "removed", "quarantined", "live", "refused"}


def test_recover_json(cli, folder, orphaned, children) -> None:
    # Besides the orphaned chosen_: a producer killed with a partial batch (its loading_ file
    # holds an uncommitted transaction: empty once rolled back) and a live producer.
    dead = children(LIVE_PRODUCER, folder)
    assert dead.line() == "put"
    (dead_file,) = listing(folder)["loading"]
    dead.kill()
    live = children(LIVE_PRODUCER, folder)
    assert live.line() == "put"
    (live_file,) = [name for name in listing(folder)["loading"] if name != dead_file]

    result = run(cli, "recover", "--json", folder)

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # the whole of stdout is the JSON document
    assert set(report) == RECOVERY_KEYS
    assert report == {
        "folder": folder, "dry_run": False, "requeued": [orphaned], "converted": [], "removed": [dead_file],
        "quarantined": [], "live": [live_file], "refused": [],
    }
    assert listing(folder)["ready"] == [orphaned.replace("chosen_", "ready_", 1)]
    assert listing(folder)["loading"] == [live_file]
    assert live.finish() == 0


def test_recover_dry_run_json(cli, folder, orphaned) -> None:
    before = snapshot(folder)
    result = run(cli, "recover", "--dry-run", "--json", folder)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == RECOVERY_KEYS
    assert report["dry_run"] is True and report["requeued"] == [orphaned] and report["folder"] == folder
    assert snapshot(folder) == before


def test_recover_missing_folder(cli, tmp_path) -> None:
    missing = str(tmp_path / "no" / "such")
    result = run(cli, "recover", missing)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip() == f"turbo-queue recover: {missing}: no such folder"
    assert not os.path.exists(missing)  # recover does not create it


def test_recover_missing_folder_json(cli, tmp_path) -> None:
    missing = str(tmp_path / "gone")
    result = run(cli, "recover", "--json", missing)
    assert result.returncode == 2 and result.stdout == ""
    assert missing in result.stderr and "no such folder" in result.stderr


def test_recover_needs_a_folder(cli) -> None:
    result = run(cli, "recover")
    assert result.returncode == 2
    assert "usage: turbo-queue recover" in result.stderr and "FOLDER" in result.stderr


# -- help, version, errors ----------------------------------------------------------------------


def test_help_shows_the_commands_and_examples(cli) -> None:
    result = run(cli, "--help")
    assert result.returncode == 0 and result.stderr == ""
    text = words(result.stdout)
    assert text.startswith("usage: turbo-queue")
    assert "A crash-safe, file-batched queue for many processes." in text
    assert "demo run a small multi-process pipeline through a queue" in text
    assert "recover re-queue the files of processes that died" in text
    assert "examples:" in text
    assert "turbo-queue recover /var/queues/events --dry-run --json" in text


def test_demo_help(cli) -> None:
    result = run(cli, "demo", "--help")
    assert result.returncode == 0 and result.stderr == ""
    text = words(result.stdout)
    assert text.startswith("usage: turbo-queue demo")
    assert "Producers put items into a queue folder, consumers take them" in text
    for option in ("--items", "--producers", "--consumers", "--codec", "--folder", "--quiet", "--verbose"):
        assert option in text


def test_recover_help(cli) -> None:
    result = run(cli, "recover", "--help")
    assert result.returncode == 0 and result.stderr == ""
    text = words(result.stdout)
    assert text.startswith("usage: turbo-queue recover")
    assert "Re-queues orphaned loading_/chosen_ files as ready_" in text
    assert "files of live processes are never touched" in text
    for option in ("--dry-run", "--json", "--quiet", "folder"):
        assert option in text


def test_version(cli) -> None:
    result = run(cli, "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"turbo-queue {turbo_queue.__version__}"


@pytest.mark.parametrize("args", [["frobnicate"], ["Demo"], ["recover-all", "/tmp"]])
def test_unknown_command(cli, args) -> None:
    result = run(cli, *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "invalid choice" in result.stderr and repr(args[0]) in result.stderr
    assert "demo" in result.stderr and "recover" in result.stderr  # the choices are named


def test_no_command(cli) -> None:
    result = run(cli)
    assert result.returncode == 2
    assert "usage: turbo-queue" in result.stderr and "required" in result.stderr


def test_unknown_option(cli, folder) -> None:
    result = run(cli, "recover", "--force", folder)
    assert result.returncode == 2
    assert "unrecognized arguments: --force" in result.stderr
