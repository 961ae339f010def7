"""The figures for machines: the ``stats --json`` document and the Prometheus text format."""

from __future__ import annotations

import time
from typing import Callable, Dict, Iterable, List, Sequence, Tuple

from .. import _folder, _status
from .connectors import ConnectorStatus
from .figures import HELD, QueueFigures

#: Version of the ``stats --json`` document (README, "Watching a queue"). Bump it on any change
#: that could break a reader; adding a key is not such a change. Schema 1 grew the key
#: ``queues[].connectors`` (the Kafka connectors on the folder, ``ConnectorStatus.as_dict``: for
#: every kind ``connector``, ``kind``, ``pid``, ``bootstrap_servers``, ``started``,
#: ``updated_age_seconds``; a source adds ``group``, ``topics``, ``paused``, ``lag``, ``partitions``
#: and its ``_status.COUNTS``, a sink ``topic``, ``dead_letter``, ``in_flight``, ``last_error`` and its
#: counts), and ``queues[].unreadable`` lists status files that could not be read too.
JSON_SCHEMA = 1


def stats_document(figures: Sequence[QueueFigures], sample_seconds: float) -> Dict[str, object]:
    """The ``stats --json`` document (schema ``JSON_SCHEMA``, described in the README)."""
    now = time.time()
    queues = []
    for one in figures:
        age = None if one.oldest_ready_epoch is None else max(0.0, now - one.oldest_ready_epoch)
        queues.append({
            "queue": one.folder,
            "exists": one.exists,
            "error": one.error,
            "files": dict(one.files),
            "backlog_items": one.backlog_items,
            "uncounted_batches": one.uncounted_batches,
            "oldest_ready_age_seconds": None if age is None else round(age, 3),
            "live": None if one.live is None else dict(sorted(one.live.items())),
            "orphaned": one.orphaned,
            "unreadable": list(one.problems) + list(one.connector_problems),
            "handed_over": None if one.handed_over_total is None else one.handed_over_total.as_dict(),
            "consumed": None if one.consumed_total is None else one.consumed_total.as_dict(),
            "connectors": [connector.as_dict(now) for connector in one.connectors],
        })
    return {"schema": JSON_SCHEMA, "time": round(now, 3), "sample_seconds": sample_seconds, "queues": queues}


#: The counters of each kind of connector (``_status.COUNTS``) as metrics: name and help.
_COUNTERS: Dict[str, Dict[str, Tuple[str, str]]] = {
    _status.SOURCE: {
        "messages_in": ("turbo_queue_kafka_source_consumed_messages_total",
                        "Messages the source consumed from Kafka and put into the folder."),
        "commits": ("turbo_queue_kafka_source_commits_total", "Offset commits the source made."),
        "pauses": ("turbo_queue_kafka_source_pauses_total",
                   "Times the source paused its partitions because the folder's backlog was at its limit."),
        "set_aside": ("turbo_queue_kafka_source_set_aside_messages_total",
                      "Messages the source could not decode, kept in bad_ batches of the folder."),
        "dead_lettered": ("turbo_queue_kafka_source_dead_lettered_messages_total",
                          "Messages the source could not decode, produced to its dead-letter topic."),
    },
    _status.SINK: {
        "taken": ("turbo_queue_kafka_sink_taken_messages_total", "Items the sink took from the folder."),
        "delivered": ("turbo_queue_kafka_sink_delivered_messages_total",
                      "Messages the broker confirmed to the sink."),
        "acks": ("turbo_queue_kafka_sink_acknowledgements_total",
                 "Times the sink acknowledged what it took (after every item was delivered or set aside)."),
        "retried": ("turbo_queue_kafka_sink_retried_messages_total",
                    "Messages the sink produced again after a transient error."),
        "errors": ("turbo_queue_kafka_sink_errors_total", "Delivery errors the sink met (transient ones included)."),
        "set_aside": ("turbo_queue_kafka_sink_set_aside_messages_total",
                      "Messages refused for good, kept in bad_ batches of the folder."),
        "dead_lettered": ("turbo_queue_kafka_sink_dead_lettered_messages_total",
                          "Messages refused for good, produced to the sink's dead-letter topic."),
    },
}
assert all(set(_COUNTERS[kind]) == set(_status.COUNTS[kind]) for kind in _status.KINDS)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def prometheus_text(figures: Sequence[QueueFigures], counters: bool = True) -> str:
    """The figures in the Prometheus text exposition format (version 0.0.4).

    Counters (``*_total``) count from when watching began; with ``counters=False`` (a one-off
    look, which watched nothing) they are left out.
    """
    out: List[str] = []

    def family(name: str, kind: str, text: str, samples: Iterable[Tuple[Dict[str, str], float]]) -> None:
        rows = list(samples)
        if not rows:
            return
        out.append(f"# HELP {name} {text}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in rows:
            rendered = ",".join(f'{key}="{_label(val)}"' for key, val in labels.items())
            number = repr(float(value)) if isinstance(value, float) and not value.is_integer() else str(int(value))
            out.append(f"{name}{{{rendered}}} {number}")

    ok = [one for one in figures if one.exists and not one.error]
    now = time.time()
    family("turbo_queue_folder_exists", "gauge", "1 if the queue folder exists and can be read, else 0.",
           (({"queue": one.folder}, 1 if one in ok else 0) for one in figures))
    family("turbo_queue_files", "gauge", "Batch files in the queue folder, by state (loading, ready, chosen, bad).",
           (({"queue": one.folder, "state": state}, one.files[state]) for one in ok for state in _folder.STATES))
    family("turbo_queue_orphaned_files", "gauge",
           "loading_/chosen_ files whose process died, waiting for recovery.",
           (({"queue": one.folder, "state": state},
             sum(1 for name in one.orphaned if name.startswith(state + "_")))
            for one in ok if one.orphaned is not None for state in HELD))
    family("turbo_queue_backlog_items", "gauge",
           "Unacknowledged items in ready_ and chosen_ batches (batches being filled are not counted).",
           (({"queue": one.folder}, one.backlog_items) for one in ok))
    family("turbo_queue_uncounted_batches", "gauge",
           "ready_/chosen_ batches whose item count could not be read (left out of the backlog).",
           (({"queue": one.folder}, one.uncounted_batches) for one in ok))
    family("turbo_queue_oldest_ready_age_seconds", "gauge",
           "Seconds since the oldest ready_ batch was created (0 when none waits).",
           (({"queue": one.folder}, round(one.oldest_ready_age or 0.0, 3)) for one in ok))
    if counters:
        for name, attr, index, text in (
            ("turbo_queue_batches_handed_over_total", "handed_over_total", "batches",
             "Batches handed over (loading_ renamed ready_)."),
            ("turbo_queue_items_handed_over_total", "handed_over_total", "items", "Items in the batches handed over."),
            ("turbo_queue_batches_consumed_total", "consumed_total", "batches",
             "Batches finished by consumers (chosen_ deleted)."),
            ("turbo_queue_items_consumed_total", "consumed_total", "items", "Items acknowledged by consumers."),
        ):
            family(name, "counter", text + " Counted since watching began.",
                   (({"queue": one.folder}, getattr(getattr(one, attr), index))
                    for one in figures if getattr(one, attr) is not None))
        family("turbo_queue_batches_uncounted_total", "counter",
               "Batches handed over or consumed that were gone before their item count could be read; "
               "the items_*_total counters leave their items out.",
               (({"queue": one.folder, "flow": flow}, getattr(one, attr).uncounted)
                for one in figures for flow, attr in (("handed_over", "handed_over_total"), ("consumed", "consumed_total"))
                if getattr(one, attr) is not None))
    _connector_families(family, ok, now)
    return "\n".join(out) + "\n"


Family = Callable[[str, str, str, Iterable[Tuple[Dict[str, str], float]]], None]


def _connector_families(family: Family, figures: Sequence[QueueFigures], now: float) -> None:
    """The metrics of the Kafka connectors running on the folders (counters included: each
    connector counts since it started, whether or not anything watched it)."""
    running = [(one.folder, connector) for one in figures for connector in one.connectors]
    sources = [(folder, c) for folder, c in running if c.kind == _status.SOURCE]
    sinks = [(folder, c) for folder, c in running if c.kind == _status.SINK]

    def labels(folder: str, connector: ConnectorStatus, **more: str) -> Dict[str, str]:
        """The folder, the connector, and what it moves: a source's group, a sink's topic."""
        moves = {"group": connector.group or ""} if connector.kind == _status.SOURCE else {"topic": connector.topic or ""}
        return {"queue": folder, "connector": connector.name, **moves, **more}

    family("turbo_queue_kafka_connectors", "gauge",
           "Kafka connectors running on the folder, by kind (source, sink), from their status files.",
           (({"queue": one.folder, "kind": kind}, sum(1 for c in one.connectors if c.kind == kind))
            for one in figures for kind in _status.KINDS))
    family("turbo_queue_kafka_connector_start_time_seconds", "gauge",
           "When the connector started, in Unix seconds.",
           ((labels(folder, c), c.started) for folder, c in running if c.started is not None))
    family("turbo_queue_kafka_connector_status_age_seconds", "gauge",
           "Seconds since the connector last rewrote its status file (it does so about once a second).",
           ((labels(folder, c), round(c.age(now) or 0.0, 3)) for folder, c in running if c.updated is not None))

    def partitions(attr: str) -> Iterable[Tuple[Dict[str, str], float]]:
        for folder, c in sources:
            for p in c.partitions:
                value = getattr(p, attr)
                if value is not None:
                    yield labels(folder, c, topic=p.topic, partition=str(p.partition)), value

    family("turbo_queue_kafka_source_committed_offset", "gauge",
           "The offset the source last committed on the partition: the next message its group reads.",
           partitions("committed"))
    family("turbo_queue_kafka_source_high_watermark_offset", "gauge",
           "The partition's high watermark: the offset its next message will get.", partitions("high_watermark"))
    family("turbo_queue_kafka_source_lag_messages", "gauge",
           "Messages of the partition after what the source committed (or put in the folder, before its first "
           "commit).", partitions("lag"))
    family("turbo_queue_kafka_source_paused", "gauge",
           "1 while the source has paused the partition because the folder's backlog is at its limit, else 0.",
           partitions("paused"))
    family("turbo_queue_kafka_sink_in_flight_messages", "gauge",
           "Items the sink took from the folder and has not yet acknowledged.",
           ((labels(folder, c), c.in_flight) for folder, c in sinks if c.in_flight is not None))

    def counted(group: List[Tuple[str, ConnectorStatus]], count: str) -> Iterable[Tuple[Dict[str, str], float]]:
        for folder, c in group:
            value = c.counts.get(count)
            if value is not None:
                yield labels(folder, c), value

    for kind, group in ((_status.SOURCE, sources), (_status.SINK, sinks)):
        for count, (name, text) in _COUNTERS[kind].items():
            family(name, "counter", text + " Counted since the connector started.", counted(group, count))
