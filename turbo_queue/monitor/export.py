"""The figures for machines: the ``stats --json`` document and the Prometheus text format."""

from __future__ import annotations

import time
from typing import Dict, Iterable, List, Sequence, Tuple

from .. import _folder
from .figures import HELD, QueueFigures

#: Version of the ``stats --json`` document (README, "Watching a queue"). Bump it on any change
#: that could break a reader; adding a key is not such a change.
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
            "unreadable": list(one.problems),
            "handed_over": None if one.handed_over_total is None else one.handed_over_total.as_dict(),
            "consumed": None if one.consumed_total is None else one.consumed_total.as_dict(),
        })
    return {"schema": JSON_SCHEMA, "time": round(now, 3), "sample_seconds": sample_seconds, "queues": queues}


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
    return "\n".join(out) + "\n"
