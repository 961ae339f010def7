"""A worker between a source and a sink, as a user writes one: the ordinary Dequeuer and Enqueuer.

``python -m tests.kafka.pipeline_worker INBOX OUTBOX PROGRESS``: takes Messages from INBOX, adds a
field to their JSON value and a header, puts them into OUTBOX, and acknowledges them only after
they were handed over there, so a worker killed at any moment loses nothing. After each
acknowledgement it appends the count to PROGRESS. SIGTERM: finish the batch in hand and exit 0.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
from typing import List

import orjson

from turbo_queue import Dequeuer, Enqueuer
from turbo_queue.kafka import Message

WORKER_HEADER = "worked"


def transform(message: Message) -> Message:
    value = orjson.loads(message.value)
    value["double"] = value["n"] * 2
    headers = list(message.headers or []) + [(WORKER_HEADER, b"yes")]
    return message._replace(value=orjson.dumps(value), headers=headers)


def main(argv: List[str]) -> int:
    inbox, outbox, progress = argv
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    report = os.open(progress, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    with Dequeuer(inbox, auto_ack=False, recover_every=1.0) as taken, \
            Enqueuer(outbox, batch_size=100_000, max_batch_delay=3600) as out:
        while not stopping:
            try:
                items = taken.get_many(1000, timeout=0.2)
            except queue.Empty:
                continue
            out.put_many([transform(m) for m in items])
            out.flush()  # handed over in OUTBOX first...
            taken.ack()  # ...then acknowledged in INBOX
            os.write(report, b"%d\n" % len(items))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
