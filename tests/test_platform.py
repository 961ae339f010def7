"""Platform facts: network filesystems are refused, a platform without flock fails clearly."""

from __future__ import annotations

import os

import pytest

from turbo_queue import Dequeuer, Enqueuer, NetworkFilesystemError
from turbo_queue._platform import (
    NETWORK_FILESYSTEMS,
    check_local_filesystem,
    fast_temp_root,
    mount_type,
    mount_type_from,
    refuse_network_filesystem,
)

from tests.support import run_python

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24684096k
40 27 0:50 / /mnt/nfs rw,relatime shared:1 - nfs4 server:/export rw,vers=4.2
41 27 0:51 / /mnt/nfs/local\\040disk rw,relatime - ext4 /dev/sdb1 rw
42 27 0:52 / /home/me/remote rw,nosuid - fuse.sshfs me@host:/ rw,user_id=0
"""


@pytest.mark.parametrize(
    "path,expected",
    [
        ("/", "ext4"),
        ("/var/queues/q", "ext4"),
        ("/dev/shm/q", "tmpfs"),
        ("/mnt/nfs", "nfs4"),
        ("/mnt/nfs/q", "nfs4"),
        ("/mnt/nfsish/q", "ext4"),
        ("/mnt/nfs/local disk/q", "ext4"),
        ("/home/me/remote/q", "fuse.sshfs"),
    ],
)
def test_the_longest_mount_point_decides_the_filesystem(path, expected):
    assert mount_type_from(MOUNTINFO, path) == expected


def test_network_filesystems_are_known():
    assert {"nfs", "nfs4", "cifs", "smb3", "fuse.sshfs"} <= NETWORK_FILESYSTEMS
    assert not {"ext4", "xfs", "btrfs", "tmpfs", "overlay"} & NETWORK_FILESYSTEMS


def test_a_local_folder_is_accepted(folder):
    assert mount_type(folder) not in NETWORK_FILESYSTEMS
    check_local_filesystem(folder)


def test_the_mount_table_is_read_once_for_a_folder_by_a_process_and_the_children_it_forks(folder):
    result = run_python("""
        import os, sys
        from turbo_queue import Dequeuer, Enqueuer
        reads = []
        sys.addaudithook(lambda event, args: reads.append(event) if event == "open" and args[0] ==
                         "/proc/self/mountinfo" else None)
        Enqueuer(sys.argv[1]).close()
        pid = os.fork()
        if pid == 0:  # a pool's worker: a producer and a consumer on the same folder
            Enqueuer(sys.argv[1]).close()
            Dequeuer(sys.argv[1]).close()
            os._exit(len(reads))
        print(len(reads), os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    """, folder)
    assert result.stdout.split() == ["1", "1"]  # the child read none of its own


@pytest.mark.parametrize("fstype", ["nfs", "nfs4", "cifs", "fuse.sshfs"])
def test_a_network_folder_is_refused_unless_allowed(fstype):
    with pytest.raises(NetworkFilesystemError, match=rf"/q is on a {fstype} filesystem.*allow_network_fs=True"):
        refuse_network_filesystem("/q", fstype)
    refuse_network_filesystem("/q", fstype, allow_network_fs=True)
    refuse_network_filesystem("/q", "ext4")


def test_temporary_queues_go_to_tmpfs_when_there_is_one():
    root = fast_temp_root()
    assert os.path.isdir(root) and os.access(root, os.W_OK)
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        assert root == "/dev/shm"


def test_without_flock_the_first_call_that_needs_it_says_so(folder):
    result = run_python(
        """
        import sys
        sys.modules["fcntl"] = None  # a platform without fcntl, such as Windows
        import turbo_queue
        for make in (turbo_queue.Enqueuer, turbo_queue.Dequeuer, turbo_queue.recover):
            try:
                make(sys.argv[1])
            except turbo_queue.UnsupportedPlatformError as exc:
                print("refused:", exc)
        """,
        folder,
    )
    assert result.stdout.count("refused: turbo_queue needs flock()") == 3
    assert os.listdir(folder) == []


def test_a_folder_that_cannot_be_created_raises_at_construction(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError):
        Enqueuer(blocker / "queue")
    with pytest.raises(OSError):
        Dequeuer(blocker / "queue")
