"""Kafka to Kafka through queue folders (the ``kafka`` extra, on confluent-kafka)."""

from __future__ import annotations

from .message import Headers, Message

__all__ = ["Headers", "Message"]
