"""Where the Kafka connectors keep their status files in a queue folder, and what they count.

The one description of the layout, shared by the writer (``turbo_queue.kafka.status``) and the
reader (``turbo_queue.monitor.connectors``). Standard library only: reading status files needs
no Kafka client.
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

#: The folder's subfolder that holds the status files (hidden: it is no batch).
STATUS_DIR = ".connectors"
SOURCE, SINK = "source", "sink"
KINDS = (SOURCE, SINK)
#: The counters each kind writes into its status document, each a whole number counted since
#: the connector's ``run()`` began.
COUNTS: Dict[str, Tuple[str, ...]] = {
    SOURCE: ("messages_in", "commits", "pauses", "set_aside", "dead_lettered"),
    SINK: ("taken", "delivered", "acks", "retried", "errors", "set_aside", "dead_lettered"),
}


def status_dir(folder: str) -> str:
    """The status folder of the queue folder ``folder``."""
    return os.path.join(folder, STATUS_DIR)


def status_name(kind: str, pid: int) -> str:
    """The file name of the status of connector ``kind`` in process ``pid``; ValueError for another kind."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return f"{kind}-{pid}.json"


def parse_status_name(name: str) -> Optional[Tuple[str, int]]:
    """``(kind, pid)`` of a status file's name; None for anything else (a temporary file, say)."""
    kind, _, rest = name.partition("-")
    pid_text = rest[: -len(".json")] if rest.endswith(".json") else ""
    if kind not in KINDS or not pid_text.isdigit():
        return None
    return kind, int(pid_text)
