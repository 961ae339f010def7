"""Seeing a queue without disturbing it: the figures behind ``turbo-queue monitor``, ``stats``,
``exporter`` and ``peek``.

Everything here only reads a queue folder. It takes no lock on a batch file and renames nothing:

- ``holders``: which ``loading_``/``chosen_`` files belong to live processes, from ``/proc/locks``.
- ``reading``: a batch's item count, acknowledged position and items, read by SQLite in
  ``immutable`` mode, which takes no lock at all. A ``loading_`` file is never opened.
- ``figures``: what one look at a folder found, and the flows a ``QueueTracker`` counts.
- ``connectors``: the Kafka connectors running on a folder, from the status files they rewrite
  (``.connectors/``); never a Kafka connection, never a change to a file.
- ``watching``: a ``Session`` feeds filesystem events (watchdog) to the trackers; the folder is
  listed again only when an event says it changed, at most a few times a second.
- ``text`` and ``export``: the figures for a person, as JSON, and in the Prometheus text format.

A library: no argument parsing, server or terminal here (those are in ``turbo_queue.cli``).
"""

from __future__ import annotations

from .connectors import ConnectorStatus, PartitionStatus, read_connectors, read_documents
from .export import JSON_SCHEMA, prometheus_text, stats_document
from .figures import HISTORY, RATE_WINDOW, Flow, QueueFigures, QueueTracker, snapshot
from .holders import Holders, holders, parse_locks, read_locks
from .reading import describe_error, read_counts, read_items, read_meta
from .text import blocks_for, ls_columns, plural, render, render_connector, render_queue, sparkline
from .watching import TAKE_EVENTS_EVERY, TICK, Session, sample

__all__ = [
    "ConnectorStatus",
    "PartitionStatus",
    "Flow",
    "HISTORY",
    "Holders",
    "JSON_SCHEMA",
    "QueueFigures",
    "QueueTracker",
    "RATE_WINDOW",
    "Session",
    "TAKE_EVENTS_EVERY",
    "TICK",
    "blocks_for",
    "describe_error",
    "holders",
    "ls_columns",
    "parse_locks",
    "plural",
    "prometheus_text",
    "read_connectors",
    "read_counts",
    "read_documents",
    "read_items",
    "read_locks",
    "read_meta",
    "render",
    "render_connector",
    "render_queue",
    "sample",
    "snapshot",
    "sparkline",
    "stats_document",
]
