"""The Kafka connectors running on a queue folder, read from the status files they rewrite.

Each ``KafkaSource`` and ``KafkaSink`` rewrites ``<folder>/.connectors/<kind>-<pid>.json`` about
once a second (atomically: a reader never sees half a file) and removes it on a clean stop. This
module only reads those files: it opens no Kafka connection, needs no Kafka client, and never
removes or changes a file, so a person or a read-only user watching a queue disturbs nothing.
A file whose process is gone (killed, or its pid now belongs to a newer process) is skipped; the
connectors themselves remove such files (``turbo_queue.kafka.status``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .. import _status

#: A process that started this many seconds after a status file was last written did not write it
#: (its pid was reused). Generous: the start time read from /proc is known to about a second.
_REUSED_AFTER = 2.0


@dataclass
class PartitionStatus:
    """One partition a source consumes: the offset it committed, the partition's end, and the lag
    between them (None where the source does not know it yet)."""

    topic: str
    partition: int
    committed: Optional[int]
    high_watermark: Optional[int]
    lag: Optional[int]
    paused: bool

    def as_dict(self) -> Dict[str, object]:
        return {"topic": self.topic, "partition": self.partition, "committed": self.committed,
                "high_watermark": self.high_watermark, "lag": self.lag, "paused": self.paused}


@dataclass
class ConnectorStatus:
    """What one running connector last said about itself.

    ``name`` is ``<kind>-<pid>`` (the status file's name, and the ``connector`` label of the
    metrics). ``counts`` holds the counters of ``_status.COUNTS[kind]`` (None: not in the
    document). A source fills ``group``, ``topics``, ``paused`` and ``partitions``; a sink
    ``topic``, ``dead_letter``, ``in_flight`` and ``last_error``.
    """

    kind: str
    pid: int
    bootstrap_servers: Optional[str] = None
    started: Optional[float] = None
    updated: Optional[float] = None
    counts: Dict[str, Optional[int]] = field(default_factory=dict)
    group: Optional[str] = None
    topics: List[str] = field(default_factory=list)
    paused: bool = False
    partitions: List[PartitionStatus] = field(default_factory=list)
    topic: Optional[str] = None
    dead_letter: Optional[str] = None
    in_flight: Optional[int] = None
    last_error: Optional[str] = None

    @property
    def name(self) -> str:
        return _status.status_name(self.kind, self.pid)[: -len(".json")]

    @property
    def lag(self) -> Optional[int]:
        """The source's lag over its partitions; None when no partition's lag is known."""
        known = [p.lag for p in self.partitions if p.lag is not None]
        return sum(known) if known else None

    def age(self, now: float) -> Optional[float]:
        """Seconds since the connector last rewrote its status (None: it did not say when)."""
        return None if self.updated is None else max(0.0, now - self.updated)

    def as_dict(self, now: float) -> Dict[str, object]:
        """The connector in the ``stats --json`` document (README, "Watching a queue")."""
        age = self.age(now)
        doc: Dict[str, object] = {
            "connector": self.name, "kind": self.kind, "pid": self.pid, "bootstrap_servers": self.bootstrap_servers,
            "started": None if self.started is None else round(self.started, 3),
            "updated_age_seconds": None if age is None else round(age, 3),
        }
        if self.kind == _status.SOURCE:
            doc.update(group=self.group, topics=list(self.topics), paused=self.paused, lag=self.lag,
                       partitions=[p.as_dict() for p in self.partitions])
        else:
            doc.update(topic=self.topic, dead_letter=self.dead_letter, in_flight=self.in_flight,
                       last_error=self.last_error)
        doc.update(self.counts)
        return doc


def read_documents(folder: str, problems: Optional[List[str]] = None, *,
                   remove_dead: bool = False) -> List[Dict[str, Any]]:
    """The status documents of the folder's live connectors, as written, with ``kind`` and ``pid``
    added; sources first, then by pid. An empty list when there is no status folder.

    The file of a process that is gone is skipped; ``remove_dead`` removes it too where this user
    may (the connectors' own cleanup: the monitor never passes it). A file that cannot be read is
    added to ``problems`` as ``".connectors/NAME: reason"``; one replaced or removed meanwhile is
    skipped.
    """
    directory = _status.status_dir(folder)
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except PermissionError:
        if problems is not None:
            problems.append(f"{_status.STATUS_DIR}: permission denied")
        return []
    found = []
    for name in names:
        parsed = _status.parse_status_name(name)
        if parsed is None:
            continue  # a temporary file, or something else
        kind, pid = parsed
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as source:
                alive = _alive(pid, os.fstat(source.fileno()).st_mtime)
                doc = json.loads(source.read()) if alive else None
        except FileNotFoundError:
            continue  # removed meanwhile: a clean stop
        except PermissionError:
            try:
                alive = _alive(pid, os.stat(path).st_mtime)
            except OSError:
                continue  # removed meanwhile
            if alive and problems is not None:
                problems.append(f"{_status.STATUS_DIR}/{name}: permission denied")
            doc = None
        except (OSError, ValueError) as exc:
            if problems is not None:
                problems.append(f"{_status.STATUS_DIR}/{name}: not a status document ({exc})")
            continue
        if not alive and remove_dead:
            try:
                os.unlink(path)
            except OSError:
                pass  # gone already, or not this user's to remove: skipped either way
        if isinstance(doc, dict):
            doc.update(kind=kind, pid=pid)
            found.append(doc)
    found.sort(key=lambda doc: (_status.KINDS.index(doc["kind"]), doc["pid"]))
    return found


def read_connectors(folder: str, problems: Optional[List[str]] = None) -> List[ConnectorStatus]:
    """The connectors running on ``folder``, from their status files (see ``read_documents``).

    A field missing from a document, or of the wrong type, is None (or empty) rather than an error.
    """
    return [_parse(doc) for doc in read_documents(folder, problems)]


def _parse(doc: Dict[str, Any]) -> ConnectorStatus:
    kind = doc["kind"]
    found = ConnectorStatus(kind=kind, pid=doc["pid"], bootstrap_servers=_str(doc.get("bootstrap_servers")),
                            started=_number(doc.get("started")), updated=_number(doc.get("updated")),
                            counts={name: _int(doc.get(name)) for name in _status.COUNTS[kind]})
    if kind == _status.SOURCE:
        found.group = _str(doc.get("group"))
        found.topics = [t for t in doc.get("topics") or [] if isinstance(t, str)]
        found.paused = doc.get("paused") is True
        for one in doc.get("partitions") or []:
            if isinstance(one, dict) and _str(one.get("topic")) is not None and _int(one.get("partition")) is not None:
                found.partitions.append(PartitionStatus(
                    topic=one["topic"], partition=one["partition"], committed=_int(one.get("committed")),
                    high_watermark=_int(one.get("high_watermark")), lag=_int(one.get("lag")),
                    paused=one.get("paused") is True))
    else:
        found.topic = _str(doc.get("topic"))
        found.dead_letter = _str(doc.get("dead_letter"))
        found.in_flight = _int(doc.get("in_flight"))
        found.last_error = _str(doc.get("last_error"))
    return found


def _str(value: object) -> Optional[str]:
    return value if isinstance(value, str) else None


def _int(value: object) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: object) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _alive(pid: int, written: Optional[float]) -> bool:
    """Whether process ``pid`` runs and could have written a file last changed at ``written``
    (Unix seconds): a process that started after that got the pid of the one that wrote it, and
    a zombie (killed, not yet waited for by its parent) runs no more."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    found = _process_stat(pid)
    if found is None:
        return True  # no /proc to ask: the pid is all there is to go by
    state, started = found
    return state not in ("Z", "X") and (written is None or started <= written + _REUSED_AFTER)


_boot_time: Optional[float] = None


def _process_stat(pid: int) -> Optional[Tuple[str, float]]:
    """Process ``pid``'s state letter and when it started, in Unix seconds (to about a second);
    None where /proc does not say."""
    global _boot_time
    try:
        if _boot_time is None:
            with open("/proc/stat") as stat:
                _boot_time = next(float(line.split()[1]) for line in stat if line.startswith("btime "))
        with open(f"/proc/{pid}/stat") as stat:
            # The fields after the command name (in parentheses, which may hold anything): the
            # 3rd field of the line, the state, is the 1st here; the 22nd, the start time in clock
            # ticks after boot, the 20th.
            fields = stat.read().rpartition(")")[2].split()
        return fields[0], _boot_time + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
