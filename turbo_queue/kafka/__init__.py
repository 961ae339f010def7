"""Kafka to Kafka through queue folders (the ``kafka`` extra, on confluent-kafka).

Importing this package needs no Kafka client: confluent-kafka is imported when a connector runs.
"""

from __future__ import annotations

from ._errors import KafkaUnavailable
from .message import Headers, Message
from .pipeline import Pipeline
from .sink import KafkaSink
from .source import KafkaSource
from .worker import Worker, batched

__all__ = ["Headers", "KafkaSink", "KafkaSource", "KafkaUnavailable", "Message", "Pipeline", "Worker", "batched"]
