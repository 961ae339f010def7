"""Facts about the OS and the filesystem: flock, inotify, network filesystems, the tmpfs location."""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import tempfile
from typing import Dict, List, Optional, Tuple

from ._errors import NetworkFilesystemError, UnsupportedPlatformError

try:
    import fcntl as _fcntl
except ImportError:  # Windows: no flock, so the protocol cannot run.
    _fcntl = None  # type: ignore[assignment]  # None marks the missing module; require_flock() says so

#: Filesystem types on which flock and rename do not keep the protocol's promises.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "9p", "afs", "ceph", "glusterfs",
        "lustre", "gpfs", "ocfs2", "gfs2", "beegfs", "virtiofs",
        "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.glusterfs", "fuse.rclone",
        "fuse.cephfs", "fuse.juicefs", "fuse.goofys", "fuse.mountpoint-s3", "fuse.davfs",
    }
)

#: File and folder modes before the umask: never writable by others (see README, Security).
FILE_MODE = 0o664
FOLDER_MODE = 0o775


def require_flock() -> None:
    """Raise UnsupportedPlatformError where there is no flock (the protocol's ownership)."""
    if _fcntl is None:
        raise UnsupportedPlatformError(
            "turbo_queue needs flock(), which this platform lacks; it runs on Linux and other POSIX systems"
        )


def try_lock(fd: int) -> bool:
    """Take an exclusive flock on ``fd`` without waiting; False if another holds it."""
    require_flock()
    try:
        _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def lock(fd: int) -> None:
    """Take an exclusive flock on ``fd``, waiting for it."""
    require_flock()
    _fcntl.flock(fd, _fcntl.LOCK_EX)


def lock_shared(fd: int) -> None:
    """Take a shared flock on ``fd``, waiting while another process holds it exclusively."""
    require_flock()
    _fcntl.flock(fd, _fcntl.LOCK_SH)


def unlock(fd: int) -> None:
    _fcntl.flock(fd, _fcntl.LOCK_UN)


def is_locked(path: str) -> bool | None:
    """Whether a live process holds the flock of ``path`` (None: the file is gone).

    Probing takes the lock for an instant when it is free, so only recovery uses it.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        return not try_lock(fd)
    finally:
        os.close(fd)


def mount_type(path: str) -> str:
    """The filesystem type of the mount that holds ``path`` ('' when unknown).

    Known once per folder and filesystem (``st_dev``) in a process and the children it forks:
    every producer and consumer a pool of workers opens on one folder would otherwise read the
    whole mount table again.
    """
    realpath = os.path.realpath(path)
    try:
        key: Optional[Tuple[str, int]] = (realpath, os.stat(realpath).st_dev)
    except OSError:
        key = None
    if key is not None and key in _mount_types:
        return _mount_types[key]
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            mountinfo = f.read()
    except OSError:
        return ""
    found = mount_type_from(mountinfo, realpath)
    if key is not None:
        _mount_types[key] = found
    return found


_mount_types: Dict[Tuple[str, int], str] = {}


def mount_type_from(mountinfo: str, realpath: str) -> str:
    """The filesystem type of the longest mount point in ``mountinfo`` that holds ``realpath``."""
    best, best_type = "", ""
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5:
            continue
        mount_point = fields[4].replace("\\040", " ")
        fstype = right.split()[0] if right.split() else ""
        inside = realpath == mount_point or realpath.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, fstype
    return best_type


def check_local_filesystem(path: str, allow_network_fs: bool = False) -> None:
    """Refuse a folder on a network filesystem unless the caller allows it explicitly."""
    refuse_network_filesystem(path, mount_type(path), allow_network_fs)


def refuse_network_filesystem(path: str, fstype: str, allow_network_fs: bool = False) -> None:
    """NetworkFilesystemError if ``fstype`` is a network filesystem and that was not allowed."""
    if fstype in NETWORK_FILESYSTEMS and not allow_network_fs:
        raise NetworkFilesystemError(
            f"{path} is on a {fstype} filesystem, where flock and rename do not keep turbo_queue's "
            f"guarantees (files could be lost or read twice). Use a local folder, or pass "
            f"allow_network_fs=True if you accept that risk."
        )


def fast_temp_root() -> str:
    """A folder in memory (tmpfs) for temporary queues: /dev/shm when usable, else the temp dir."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return tempfile.gettempdir()


def make_folder(path: str) -> None:
    """Create ``path`` and its parents if missing (not world-writable)."""
    os.makedirs(path, mode=FOLDER_MODE, exist_ok=True)


def check_path(path: str, create: bool = True) -> None:
    """A clear error for a queue path that cannot be a queue folder, before anything is created.

    ``NotADirectoryError`` when it (or a parent) is a file; ``FileNotFoundError`` when it is
    missing and ``create`` is false (a mistyped path must not start an empty queue).
    """
    probe = path
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if os.path.lexists(probe) and not os.path.isdir(probe):
        where = "it" if probe == path else f"{probe}, on its way,"
        raise NotADirectoryError(errno.ENOTDIR, f"the queue path is not a folder: {where} is a file. Give the "
                                 f"path of a queue folder (a new one is created if missing)", path)
    if not create and probe != path:
        raise FileNotFoundError(errno.ENOENT, "no queue folder there (create=False: the queue must already "
                                "exist). Check the path, or start its producers first", path)


def prepare_folder(path: str, allow_network_fs: bool = False) -> None:
    """Everything a queue folder needs before use: flock, the folder itself, a local filesystem.

    ``NotADirectoryError`` ("not a folder") when ``path`` or a parent of it is a file.
    """
    require_flock()
    check_path(path)
    make_folder(path)
    check_local_filesystem(path, allow_network_fs)


def fsync_folder(path: str) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Inotify:
    """A Linux inotify instance, through libc: watch folders, read their events.

    OSError where the platform has no inotify or a limit (``fs.inotify.max_user_*``) is reached.
    """

    MOVED_FROM, MOVED_TO, CREATE, DELETE = 0x40, 0x80, 0x100, 0x200
    Q_OVERFLOW, IGNORED, ONLYDIR = 0x4000, 0x8000, 0x1000000
    _CLOEXEC, _NONBLOCK = 0o2000000, 0o4000
    _HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name

    def __init__(self, nonblocking: bool = False) -> None:
        try:
            self._libc = ctypes.CDLL(None, use_errno=True)
            init = self._libc.inotify_init1
        except (OSError, AttributeError):
            raise OSError(errno.ENOSYS, "this platform has no inotify") from None
        fd = init(self._CLOEXEC | (self._NONBLOCK if nonblocking else 0))
        if fd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_init1: {os.strerror(ctypes.get_errno())}")
        self.fd = fd

    def add_watch(self, folder: str, mask: int) -> int:
        """Watch ``folder`` for the events in ``mask``; returns its watch descriptor."""
        wd = int(self._libc.inotify_add_watch(self.fd, os.fsencode(folder), mask))
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch: {os.strerror(ctypes.get_errno())}", folder)
        return wd

    def read(self) -> List[Tuple[int, int, bytes]]:
        """The next events as ``(wd, mask, name)``; waits unless nonblocking ([] when none)."""
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        events = []
        pos, header = 0, self._HEADER
        while pos < len(data):
            wd, mask, _cookie, length = header.unpack_from(data, pos)
            pos += header.size
            events.append((wd, mask, data[pos:pos + length].rstrip(b"\0")))
            pos += length
        return events

    def close(self) -> None:
        os.close(self.fd)
