"""Anonymous queues (``Queue()`` without ``path``): nothing is left behind for good.

A creator killed by SIGTERM or SIGKILL cannot remove its folder; the next turbo_queue process
that makes an anonymous queue (or ``turbo-queue recover --stale``) removes every anonymous folder
whose ``.users`` lock nobody holds, and never one that a live process still uses.

Each test keeps its anonymous queues in a root of its own (``ANONYMOUS_ROOT``: every program it
starts begins with ``PRELUDE``), so that no other test's ``Queue()`` sweeps its folders first.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator, Tuple

import pytest

from tests.support import Child, run_python
from tests.support.supervised import running, wait_for
from turbo_queue import _platform
from turbo_queue.cli import main

PRELUDE = """
import json
import os
from turbo_queue import _platform
_platform.fast_temp_root = lambda: os.environ["ANONYMOUS_ROOT"]
"""

CREATOR = PRELUDE + """
import sys, time
import multiprocessing
from turbo_queue import Queue

def child(q):
    q.put("from the child")
    print("child", os.getpid(), flush=True)
    time.sleep(600)

if __name__ == "__main__":
    q = Queue()
    q.put_many(list(range(1000)))
    q.flush()
    print("path", q.path, flush=True)
    if sys.argv[1] != "alone":  # the start method of a child that uses the queue
        multiprocessing.get_context(sys.argv[1]).Process(target=child, args=(q,)).start()
    sys.stdin.readline()
"""

SWEEPER = PRELUDE + """
from turbo_queue import Queue
q = Queue()
q.put(1)
assert q.get(timeout=10) == 1
"""


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    folder = tmp_path / "shm"
    folder.mkdir()
    monkeypatch.setenv("ANONYMOUS_ROOT", str(folder))
    return str(folder)


@pytest.fixture
def creator(root: str) -> Iterator[Tuple[Child, str]]:
    child = Child(CREATOR, "alone")
    try:
        path = child.expect("path")
        assert os.path.dirname(path) == root
        yield child, path
    finally:
        child.close()


def test_a_killed_creators_folder_goes_with_the_next_anonymous_queue_sigkill(creator):
    child, path = creator
    run_python(SWEEPER)
    assert os.path.isdir(path)  # its creator lives: never touched
    child.kill()
    assert os.path.isdir(path)  # nothing removed it at the kill
    run_python(SWEEPER)
    assert not os.path.exists(path)


def test_a_killed_creators_folder_goes_with_the_next_anonymous_queue_sigterm(creator):
    child, path = creator
    child.proc.send_signal(signal.SIGTERM)
    assert child.proc.wait(timeout=60) == -signal.SIGTERM
    assert os.path.isdir(path)  # SIGTERM runs no clean-up: the folder stays
    run_python(SWEEPER)
    assert not os.path.exists(path)


@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_child_that_still_uses_it_keeps_it_until_it_is_gone(root, tmp_path, sig, method):
    # A script file, so that a spawned child can import the function it runs.
    script = tmp_path / "creator.py"
    script.write_text(CREATOR)
    creator = subprocess.Popen([sys.executable, str(script), method], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)
    grandchild = 0
    try:
        assert creator.stdout is not None
        path = creator.stdout.readline().split()[-1]
        grandchild = int(creator.stdout.readline().split()[-1])
        creator.send_signal(sig)
        creator.wait(timeout=60)
        run_python(SWEEPER)
        assert os.path.isdir(path)  # the child still holds the queue
        os.kill(grandchild, sig)
        wait_for(lambda: not running(grandchild), message=f"process {grandchild} to end")
        run_python(SWEEPER)
        assert not os.path.exists(path)
    finally:
        creator.kill()
        creator.wait()
        if grandchild and running(grandchild):
            os.kill(grandchild, signal.SIGKILL)

def test_recover_stale_removes_them_too(creator, root, monkeypatch, capsys):
    monkeypatch.setattr(_platform, "fast_temp_root", lambda: root)
    child, path = creator
    assert main(["recover", "--stale"]) == 0
    assert os.path.isdir(path)  # its creator lives
    child.kill()
    capsys.readouterr()
    assert main(["recover", "--stale"]) == 0
    assert capsys.readouterr().out == f"removed (anonymous queue nobody uses): {path}\n"
    assert not os.path.exists(path)


def test_recover_needs_a_folder_or_stale():
    done = subprocess.run([sys.executable, "-m", "turbo_queue", "recover"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "give a FOLDER, or --stale" in done.stderr


def test_a_queue_closed_normally_leaves_nothing(root):
    run_python(SWEEPER)
    assert os.listdir(root) == []


def test_a_live_queue_passed_to_a_spawned_child_is_kept_and_works(root, tmp_path):
    # The child makes an anonymous queue of its own (which sweeps) while its parent's is in use.
    script = tmp_path / "program.py"
    script.write_text(PRELUDE + textwrap.dedent("""
        import multiprocessing, subprocess, sys
        from turbo_queue import Queue

        def child(q):
            subprocess.run([sys.executable, "-c", sys.argv[1]], check=True)
            q.put("still here")

        if __name__ == "__main__":
            q = Queue()
            p = multiprocessing.get_context("spawn").Process(target=child, args=(q,))
            p.start()
            print(q.get(timeout=60))
            p.join()
    """))
    done = subprocess.run([sys.executable, str(script), SWEEPER], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "still here"



def test_a_creator_killed_while_making_its_folder_leaves_nothing_for_good(root):
    # What a creator killed inside Queue(), before its lock had its name, leaves; and, beside it,
    # folders that are not this version's to judge: one of an older turbo_queue (no .users), an
    # empty one (the demo's, a user's own), and one being made right now.
    making, older, empty, fresh = (os.path.join(root, f"turbo_queue-{name}") for name in
                                   ("making", "older", "empty", "fresh"))
    for path in (making, older, empty, fresh):
        os.mkdir(path)
    for path in (making, fresh):
        open(os.path.join(path, ".users.making"), "w").close()
    os.mkdir(os.path.join(older, ".counters"))
    for path in (making, older, empty):
        os.utime(path, (0, 0))  # long ago
    run_python(SWEEPER)
    assert sorted(os.listdir(root)) == ["turbo_queue-empty", "turbo_queue-fresh", "turbo_queue-older"]


def test_recover_stale_json_is_one_json_document(creator, root):
    child, path = creator
    child.kill()
    done = run_python(PRELUDE + "from turbo_queue.cli import main; raise SystemExit(main(['recover', '--stale', "
                      "'--json']))")
    assert json.loads(done.stdout) == {"stale_removed": [path]}
    assert not os.path.exists(path)
