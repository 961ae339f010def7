"""Recovery: put back the files of processes that died.

``recover(folder)`` is safe to run at any time, beside live producers and consumers: it only takes
a file whose flock is free (its owner died; the kernel dropped the lock), opens it under its
current name so SQLite rolls back an unfinished transaction, checks it, and then re-queues it as
``ready_`` (keeping its epoch and the consumer's acknowledged position), removes it if it holds
nothing, or renames it to ``bad_`` if it fails the check.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import stat
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

from . import _folder, _platform, _batchfile, _upgrade

log = logging.getLogger("turbo_queue")

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class RecoveryReport:
    """What one ``recover()`` pass did, as lists of file names (before the move)."""

    folder: str
    requeued: List[str] = field(default_factory=list)
    converted: List[str] = field(default_factory=list)
    removed: List[str] = field(default_factory=list)
    quarantined: List[str] = field(default_factory=list)
    live: List[str] = field(default_factory=list)
    refused: List[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def changed(self) -> int:
        return len(self.requeued) + len(self.converted) + len(self.removed) + len(self.quarantined)

    def as_dict(self) -> Dict[str, object]:
        return {
            "folder": self.folder, "dry_run": self.dry_run, "requeued": self.requeued,
            "converted": self.converted, "removed": self.removed, "quarantined": self.quarantined, "live": self.live,
            "refused": self.refused,
        }


def recover(folder: PathLike, *, dry_run: bool = False, durable: bool = False) -> RecoveryReport:
    """Re-queue orphaned ``loading_``/``chosen_`` files of ``folder``; return what was done.

    Files left by turbo-queue 0.5.2 or 0.8.0 (their own names, or an orphan of the old layout
    under a protocol name) are converted to the current format and handed over (``converted``).
    With ``dry_run`` nothing in the folder changes: each orphan (and its journal) is copied to a
    private temporary folder and the same decision is made on the copy, so the report says what
    a real run would do.
    A missing folder is an empty one.
    """
    _platform.require_flock()
    path = os.path.abspath(os.fspath(folder))
    report = RecoveryReport(path, dry_run=dry_run)
    try:
        names = sorted(os.listdir(path))
    except FileNotFoundError:
        return report
    for name in names:
        parsed = _folder.parse_name(name)
        if parsed is not None and parsed.state in (_folder.LOADING, _folder.CHOSEN):
            _recover_batch(path, name, parsed.state, report, durable)
        elif _folder.parse_creating(name) is not None:
            _remove_orphaned_creating(path, name, report)
        elif _upgrade.old_name(name) is not None:
            _convert_old(path, name, report, durable)
    return report


def _is_regular(path: str) -> Optional[bool]:
    """Whether ``path`` is a regular file (None: gone). Symlinks, folders, FIFOs are not ours."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return None


def _recover_batch(folder: str, name: str, state: str, report: RecoveryReport, durable: bool) -> None:
    path = os.path.join(folder, name)
    regular = _is_regular(path)
    if regular is None:
        return
    if not regular:
        log.warning("turbo_queue: %s is not a regular file, so not a batch; left alone", path)
        report.refused.append(name)
        return
    if report.dry_run:
        _dry_run_batch(folder, name, state, report)
        return
    try:
        batch = _folder.take(folder, name, state, state)
    except _folder.Held:  # its owner is alive
        report.live.append(name)
        return
    except _folder.EntryRefused as exc:  # a symlink since the look above, or a file we may not open
        log.warning("turbo_queue: %s: %s; left as it is", path, exc.strerror)
        report.refused.append(name)
        return
    if batch is None:
        if os.path.lexists(path):
            report.live.append(name)
        return
    try:
        if not os.access(batch.path, os.W_OK, effective_ids=os.access in os.supports_effective_ids):
            # Another user's file that this one may not write (its umask left no group write):
            # SQLite could not roll back a hot journal, and the file would look corrupt.
            log.warning("turbo_queue: %s is not writable by this user; left for its owner's recover()", path)
            report.refused.append(name)
            return
        found, decision = _decide(batch.path)
        crashes = _record_crash(batch.path, durable) if decision == "requeue" and state == _folder.CHOSEN else 0
        if decision == "newer":
            log.error("turbo_queue: %s; recovery left it as it is", found.detail)
            report.refused.append(name)
        elif decision == "journal":
            log.error("turbo_queue: %s still has a journal beside it after recovery; left as it is", batch.path)
            report.refused.append(name)
        elif decision == "old":
            _convert_held(batch, name, report, durable)
        elif decision == "corrupt":
            batch.move(_folder.BAD, durable)
            log.error("turbo_queue: %s failed its check (%s); kept as %s", name, found.detail, batch.name.filename)
            report.quarantined.append(name)
        elif decision == "empty":
            batch.remove(durable)
            log.info("turbo_queue: removed %s, an orphan holding no unacknowledged items", name)
            report.removed.append(name)
        else:
            batch.move(_folder.READY, durable)
            log.warning(
                "turbo_queue: re-queued %s as %s (%d of %d items left%s)",
                name, batch.name.filename, found.count - found.acked, found.count,
                f"; its consumer died at item {found.acked}, crash {crashes} there" if crashes else "",
            )
            report.requeued.append(name)
    finally:
        batch.unlock()


def _decide(path: str) -> Tuple[_batchfile.Inspection, str]:
    """What recovery does with the orphan at ``path`` (held by the caller): the one place it is decided.

    Opens the file (SQLite rolls back a hot journal), checks it, removes a journal SQLite ignores;
    then "newer", "journal" (one is still beside it), "old", "corrupt", "empty" or "requeue".
    A dry run calls it on a private copy of the file and its journal, so the real ones stay as they are.
    """
    found = _batchfile.inspect(path)
    _remove_ignored_journal(path)
    if found.state == "newer":
        return found, "newer"
    if _batchfile.has_journal(path):
        return found, "journal"
    return found, {"old": "old", "corrupt": "corrupt", "empty": "empty"}.get(found.state, "requeue")


def _dry_run_batch(folder: str, name: str, state: str, report: RecoveryReport) -> None:
    """What ``_recover_batch`` would do with ``name``, decided by ``_decide`` on a private copy."""
    path = os.path.join(folder, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError:  # a file of another user that this one may not open: not ours to judge
        report.refused.append(name)
        return
    try:
        if not _platform.try_lock(fd):  # its owner is alive
            report.live.append(name)
            return
        # Held while copying: no recovery can move it meanwhile, and its owner is gone.
        with tempfile.TemporaryDirectory(prefix="turbo_queue-dry-run-") as private:
            copy = os.path.join(private, name)
            try:
                shutil.copyfile(path, copy)
                for suffix in ("-journal", "-wal"):
                    if os.path.lexists(path + suffix):
                        shutil.copyfile(path + suffix, copy + suffix)
            except OSError as exc:
                log.warning("turbo_queue: cannot copy %s to look at it (%s); left out of the dry run", path, exc)
                report.refused.append(name)
                return
            found, decision = _decide(copy)
    finally:
        os.close(fd)
    if decision == "old":
        report.converted.append(name)
    elif decision == "corrupt":
        report.quarantined.append(name)
    elif decision == "empty":
        report.removed.append(name)
    elif decision == "requeue":
        report.requeued.append(name)
    else:
        report.refused.append(name)


def _record_crash(path: str, durable: bool) -> int:
    """Count the crash of the consumer that held a ``chosen_`` file (see ``Dequeuer(max_crashes)``).

    Not recording it (a full disk) only delays setting a poison item aside; the batch is
    re-queued either way. Returns the count, 0 when it could not be recorded.
    """
    try:
        return _batchfile.record_crash(path, durable)
    except sqlite3.Error as exc:
        log.warning("turbo_queue: could not count the crash of the consumer of %s (%s)", path, exc)
        return 0


def _remove_ignored_journal(path: str) -> None:
    """Remove a journal that SQLite ignores and never removes, once SQLite had its chance to roll back.

    SQLite rolls back only a journal whose first byte is not zero. A kill just after it created
    the journal leaves it empty; with synchronous on (durable=True) it writes the header's first
    bytes only when it syncs the journal, before it changes any page of the database, so a kill
    before that leaves a journal that starts with zeros. Either holds nothing to roll back, and
    left beside the file it would keep the batch from ever being re-queued (R1).
    """
    journal = path + "-journal"
    try:
        fd = os.open(journal, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return  # no journal (the usual case), or not a file SQLite made
    try:
        ignored = stat.S_ISREG(os.fstat(fd).st_mode) and os.read(fd, 1) in (b"", b"\0")
    finally:
        os.close(fd)
    if ignored:
        os.unlink(journal)


def _remove_orphaned_creating(folder: str, name: str, report: RecoveryReport) -> None:
    # A producer's hidden file before it became loading_: it holds no data.
    path = os.path.join(folder, name)
    if not _is_regular(path):
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return  # gone (renamed to loading_ or removed), or not ours to touch
    try:
        if not _platform.try_lock(fd):
            return
        if report.dry_run:
            report.removed.append(name)
            return
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                os.unlink(path)
                report.removed.append(name)
        except FileNotFoundError:
            pass  # its producer renamed it after all
    finally:
        os.close(fd)


def _log_conversion(name: str, outcome: str, new: Optional[str], report: RecoveryReport) -> None:
    if outcome == "requeued":
        log.warning("turbo_queue: converted %s, a batch of turbo-queue 0.5.2/0.8.0, into %s", name, new)
        report.converted.append(name)
    elif outcome == "removed":
        log.info("turbo_queue: removed %s, a batch of turbo-queue 0.5.2/0.8.0 holding no items", name)
        report.removed.append(name)
    else:
        log.error("turbo_queue: %s, a batch of turbo-queue 0.5.2/0.8.0, failed its check; kept as %s", name, new)
        report.quarantined.append(name)


def _convert_held(batch: _folder.Batch, name: str, report: RecoveryReport, durable: bool) -> None:
    """An orphan of the old layout under a protocol name (0.5.2 used them too), held by recovery."""
    try:
        outcome, new = _upgrade.convert(batch.folder, batch.path, batch.name.epoch, durable)
    except (OSError, sqlite3.Error) as exc:
        log.error("turbo_queue: cannot convert %s, a batch of turbo-queue 0.5.2/0.8.0 (%s); left as it is", name, exc)
        report.refused.append(name)
        return
    _log_conversion(name, outcome, new, report)


def _convert_old(folder: str, name: str, report: RecoveryReport, durable: bool) -> None:
    """A file under a name only 0.5.2 or 0.8.0 used (``load_``, ``unload_``, ``..._recovered.db``)."""
    if not _is_regular(os.path.join(folder, name)):
        return
    if report.dry_run:
        report.converted.append(name)
        return
    try:
        done = _upgrade.convert_unlocked(folder, name, durable)
    except (OSError, sqlite3.Error) as exc:
        log.error("turbo_queue: cannot convert %s, a batch of turbo-queue 0.5.2/0.8.0 (%s); left as it is", name, exc)
        report.refused.append(name)
        return
    if done is not None:
        _log_conversion(name, *done, report)
