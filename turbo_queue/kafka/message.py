"""``Message``: a Kafka record as it travels through a queue folder.

It needs nothing from confluent-kafka, so a worker between a source and a sink can read and make
messages with the ordinary ``Dequeuer``/``Enqueuer``/``Queue`` and no Kafka client installed.
"""

from __future__ import annotations

from typing import Any, List, NamedTuple, Optional, Tuple

#: Kafka headers: (name, value) pairs in order; a name may repeat and a value may be None.
Headers = List[Tuple[str, Optional[bytes]]]


class Message(NamedTuple):
    """One Kafka record: what the source puts into a folder and what the sink produces.

    ``value`` is bytes unless the source was asked to decode it (``value="json"``). ``timestamp``
    is in milliseconds since the epoch. ``topic``, ``partition`` and ``offset`` say where the
    record came from; the sink ignores them, and chooses the partition from ``key`` unless
    ``partition`` is given to it.
    """

    value: Any
    key: Optional[bytes] = None
    headers: Optional[Headers] = None
    timestamp: Optional[int] = None
    topic: Optional[str] = None
    partition: Optional[int] = None
    offset: Optional[int] = None
