"""Scenario 11: permissions. A folder this user may not write, a read-only mount, and a folder
shared by two users through a group (the second user is ``nobody``)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from typing import Dict, List, Tuple

from turbo_queue import Enqueuer, _folder

from .context import Context, Run, scenario
from .disk import Tmpfs
from .files import without_dac_override
from .folder import drain, groups, remove_tree, write_batch
from .processes import DEADLINE, Unavailable
from .tally import Result, tally

#: What the second user imports: turbo_queue and the packages it needs.
PACKAGES = ("turbo_queue", "orjson", "watchdog")


def copy_packages(dest: str, names=PACKAGES) -> str:
    """Copy the packages ``names`` (as this interpreter imports them) into ``dest``, readable by
    every user: another user can import them from there whatever the modes of this checkout and
    of this virtualenv. ``dest`` (for PYTHONPATH)."""
    os.makedirs(dest, exist_ok=True)
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise Unavailable(f"{name} is not importable here")
        if spec.submodule_search_locations:  # a package: its folder
            source = list(spec.submodule_search_locations)[0]
            shutil.copytree(source, os.path.join(dest, name), ignore=shutil.ignore_patterns("__pycache__"))
        else:  # a module (or an extension) of one file
            shutil.copy2(spec.origin, os.path.join(dest, os.path.basename(spec.origin)))
    for base, dirs, files in os.walk(dest):
        os.chmod(base, 0o755)
        for name in files:
            os.chmod(os.path.join(base, name), 0o644)
    return dest


def other_user_python(shared_root: str) -> Tuple[List[str], Dict[str, str]]:
    """(interpreter, environment) to run this checkout's turbo_queue as user nobody.

    turbo_queue and what it imports are copied into ``shared_root`` (a folder every user may
    enter), so neither this checkout nor this virtualenv needs to be readable by others. The
    interpreter may live where nobody may not look (/root): then a system Python of the same
    version.
    """
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        raise Unavailable("needs root and setpriv (util-linux) to run a second user")
    env = dict(os.environ, PYTHONPATH=copy_packages(os.path.join(shared_root, "site-packages")))
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, os.path.realpath(sys.executable), f"/usr/bin/python{version}"):
        cmd = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", python, "-c",
               "import " + ", ".join(PACKAGES)]
        try:
            ok = subprocess.run(cmd, env=env, capture_output=True, cwd="/", timeout=60).returncode == 0
        except OSError:
            ok = False
        if ok:
            return [python], env
    raise Unavailable(f"no Python {version} that user nobody may run with turbo_queue importable")


def as_user(python: List[str], env: Dict[str, str], group: int, umask: int, code: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [shutil.which("setpriv"), "--reuid=nobody", "--regid=nogroup", f"--groups={group}"]
    script = f"import os; os.umask({umask:#o})\n" + textwrap.dedent(code)
    return subprocess.run(cmd + python + ["-c", script, *args], env=env, capture_output=True, text=True,
                          cwd="/", timeout=DEADLINE)


SHARED_CONSUMER = """
    import json, logging, queue, sys
    logging.basicConfig(level=logging.WARNING)
    from turbo_queue import Dequeuer, Enqueuer, recover
    folder = sys.argv[1]
    got = []
    with Dequeuer(folder, ack_every=5, recover_every=3600) as consumer:
        got.append(consumer.get(timeout=10)["id"])
    with Dequeuer(folder, ack_every=5, recover_every=3600) as consumer:  # the first handed the rest back
        try:
            while True:
                got += [item["id"] for item in consumer.get_many(100, timeout=0.5)]
        except queue.Empty:
            pass
    with Enqueuer(folder) as producer:
        producer.put({"id": -7})
    print(json.dumps(got))
"""


@scenario("permissions", "11. permissions: read-only, shared by a group")
def scenario_permissions(ctx: Context, result: Result) -> None:
    """11. A folder this user may not write (modes, or a read-only mount): a clear PermissionError
    at construction. A folder shared by two users through a group: it works, and the files'
    modes follow the umask (0o664 & ~umask)."""
    prefix = without_dac_override()
    # the second user must be able to reach the folder and the code it runs: a base in the system's
    # temp folder, not under a private (0o700) one such as pytest's or the checkout's
    shared_root = tempfile.mkdtemp(prefix="turbo_queue-shared-")
    os.chmod(shared_root, 0o755)
    try:
        python, env = other_user_python(shared_root)
        group = 100  # "users" on Debian; any group works, nobody gets it as a supplementary group
        _permission_runs(ctx, result, prefix, python, env, group, shared_root)
    finally:
        remove_tree(shared_root)


READ_ONLY_CHECK = """
    import errno, sys
    from turbo_queue import Dequeuer, Enqueuer, recover
    for cls in (Enqueuer, Dequeuer):
        try:
            cls(sys.argv[1])
        except PermissionError as exc:
            assert exc.errno in (errno.EACCES, errno.EROFS) and "cannot create or rename" in str(exc), exc
            assert exc.filename == sys.argv[1], exc.filename
        else:
            raise AssertionError(f"{cls.__name__} accepted a folder it cannot write")
    print(recover(sys.argv[1]).as_dict())
"""


def _permission_runs(ctx: Context, result: Result, prefix: List[str], python: List[str], env: Dict[str, str],
                     group: int, shared_root: str) -> None:
    code = textwrap.dedent(READ_ONLY_CHECK)
    for number in range(ctx.runs(3, 1, 10)):
        with ctx.run(result, f"run {number}: read-only folder") as run:
            write_batch(run.folder, list(range(10)), _folder.READY)
            os.chmod(run.folder, 0o555)
            proc = subprocess.run(prefix + [sys.executable, "-c", code, run.folder], capture_output=True, text=True,
                                  timeout=DEADLINE)
            if proc.returncode != 0:
                run.fail(proc.stderr[-600:])
            os.chmod(run.folder, 0o755)

        with ctx.run(result, f"run {number}: read-only mount") as run, Tmpfs(ctx.root, 1_000_000) as mount:
            folder = os.path.join(mount.path, "q")
            os.mkdir(folder)
            write_batch(folder, list(range(10)), _folder.READY)
            write_batch(folder, list(range(10, 20)), _folder.LOADING)
            mount.remount_ro()
            proc = subprocess.run([sys.executable, "-c", code, folder], capture_output=True, text=True, timeout=DEADLINE)
            if proc.returncode != 0:
                run.fail(proc.stderr[-600:])

        # a folder shared by root and nobody through a group, with umask 002 and 022
        for umask in (0o002, 0o022):
            with ctx.run(result, f"run {number} (umask {umask:03o})", base=shared_root) as run:
                _shared_run(run, python, env, group, umask)


def _shared_run(run: Run, python: List[str], env: Dict[str, str], group: int, umask: int) -> None:
    folder = run.folder
    os.chown(folder, 0, group)
    os.chmod(folder, 0o2775)  # setgid: new files get the folder's group
    old = os.umask(umask)
    try:
        with Enqueuer(folder, batch_size=40, chunk_size=10) as producer:
            producer.put_many([{"id": i} for i in range(100)])
        sub = os.path.join(folder, "made-by-enqueuer")
        Enqueuer(sub).close()
    finally:
        os.umask(old)
    modes = {oct(stat.S_IMODE(os.stat(os.path.join(folder, n)).st_mode)) for n in groups(folder)["ready"]}
    if modes != {oct(0o664 & ~umask)}:
        run.fail(f"batch files have modes {modes}, not 0o664 & ~umask")
    folder_mode = stat.S_IMODE(os.stat(sub).st_mode) & 0o777
    if folder_mode != 0o775 & ~umask:
        run.fail(f"a folder made by Enqueuer has mode {oct(folder_mode)}")
    os.rmdir(sub)
    proc = as_user(python, env, group, umask, SHARED_CONSUMER, folder)
    if proc.returncode != 0:
        run.result.items += 100
        run.fail(f"the second user failed: {proc.stderr[-800:]}")
        return
    got = json.loads(proc.stdout.splitlines()[-1])
    # With umask 022 the second user may not write root's files, so it cannot record how far it got:
    # the batch it hands back is delivered again from its last recorded position.
    tally(run.result, run.label + ": the second user", range(100), got,
          duplicates_allowed=0 if umask == 0o002 else None)
    if umask == 0o022 and "cannot record the acknowledged position" not in proc.stderr:
        run.fail("no warning that positions cannot be recorded in files of another user")
    theirs = list(groups(folder)["ready"])
    back = [item["id"] for item in drain(folder)]
    if back != [-7] or len(theirs) != 1:
        run.fail(f"root got {back} from the second user's batch")
