"""turbo-queue 0.8.0's ``KafkaEnqueue`` and ``KafkaDequeue``, on ``KafkaSource`` and ``KafkaSink``.

Code written against 0.8.0 runs unchanged, with the safe semantics: offsets are committed only
after the messages are handed over, items are acknowledged only after the broker confirmed them,
an error raises instead of calling ``exit()``, and a value that is not JSON is set aside instead
of stopping the loader. ``start()`` runs until ``stop()``, SIGTERM or SIGINT, as 0.8.0's
``start()`` ran forever. confluent-kafka is needed (``pip install 'turbo-queue[kafka]'``).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any, Dict, List, Optional

import orjson

from ..kafka._errors import KafkaUnavailable, describe, import_confluent_kafka
from .core import _Setting

#: What 0.8.0's consumer settings kept that a current broker still understands (it also turned
#: automatic commits on and API version requests off: both are left out, on purpose).
_CONSUMER_SETTINGS = {
    "session.timeout.ms": 60000,
    "max.poll.interval.ms": 300000,
    "heartbeat.interval.ms": 5000,
    "coordinator.query.interval.ms": 15000,
    "partition.assignment.strategy": "roundrobin",
}


class _KafkaBase:
    """The settings both had: where the turbo queue is and which brokers to talk to."""

    queue_name = _Setting(str, "example_queue_name")  # kept: 0.8.0 had them and never used them
    root_path = _Setting(str, "/dc_data")
    turbo_queue_queue_name = _Setting(str, None)
    turbo_queue_root_path = _Setting(str, None)
    kafka_brokers = _Setting(str, None)
    kafka_client_id = _Setting(str, None)

    def __init__(self) -> None:
        self._connector: Any = None  # the KafkaSource or KafkaSink while start() runs
        self._stop_asked = False

    @property
    def folder(self) -> str:
        """The queue folder: ``turbo_queue_root_path/turbo_queue_queue_name``."""
        root: str = self.turbo_queue_root_path
        name: str = self.turbo_queue_queue_name
        return os.path.join(root, name)

    def stop(self) -> None:
        """Make ``start()`` finish what is in flight and return (safe from a signal handler)."""
        self._stop_asked = True
        if self._connector is not None:
            self._connector.stop()

    def _require(self, *names: str) -> None:
        missing = [name for name in names if getattr(self, name) is None]
        if missing:
            raise ValueError(f"{type(self).__name__}.start(): set {', '.join(missing)} first")

    def _run(self, connector: Any) -> None:
        """Run ``connector`` until ``stop()``, SIGTERM or SIGINT (handled only in the main thread)."""
        self._connector = connector
        if self._stop_asked:  # stop() came before the connector existed
            connector.stop()
        main = threading.current_thread() is threading.main_thread()
        signals = (signal.SIGTERM, signal.SIGINT)
        previous = [signal.signal(sig, lambda _signum, _frame: self.stop()) for sig in signals] if main else []
        try:
            connector.run()
        finally:
            for sig, handler in zip(signals, previous):
                signal.signal(sig, handler)
            self._connector = None
            self._stop_asked = False


class KafkaEnqueue(_KafkaBase):
    """Consumes Kafka topics into a turbo queue: set the properties, ``kafka_subscribe(topic)``, ``start()``.

    Each message's value is decoded as JSON and becomes one item, as in 0.8.0; a value that is
    not JSON goes into a ``bad_`` batch of the folder. ``turbo_queue_max_ready_files`` pauses
    consuming while that many batches wait (default 100); ``turbo_queue_max_events_per_file``
    is the batch size (default 10,000). Offsets are committed only once the messages are in a
    handed-over batch, so a loader killed at any moment loses nothing.
    """

    kafka_group_id = _Setting(str, None)
    kafka_auto_offset_reset = _Setting(str, "latest")  # 0.8.0's default: a new group starts at the end
    turbo_queue_max_ready_files = _Setting(int, None, minimum=1)
    turbo_queue_max_events_per_file = _Setting(int, None, minimum=1)

    def __init__(self) -> None:
        super().__init__()
        self._consumer_topic_list: List[str] = []

    def kafka_subscribe(self, topic_name: str) -> None:
        """Add a topic (or a ``^regex``) to consume."""
        if not isinstance(topic_name, str) or not topic_name:
            raise ValueError(f"topic_name must be a topic name, got {topic_name!r}")
        self._consumer_topic_list.append(topic_name)

    def settings(self) -> Dict[str, Any]:
        """The librdkafka settings the consumer gets."""
        config: Dict[str, Any] = {**_CONSUMER_SETTINGS, "auto.offset.reset": self.kafka_auto_offset_reset}
        if self.kafka_client_id is not None:
            config["client.id"] = self.kafka_client_id
        return config

    def start(self) -> None:
        """Consume until ``stop()``, SIGTERM or SIGINT. ValueError when a setting is missing."""
        self._require("kafka_group_id", "kafka_client_id", "turbo_queue_queue_name", "turbo_queue_root_path",
                      "kafka_brokers")
        if not self._consumer_topic_list:
            raise ValueError("KafkaEnqueue.start(): call kafka_subscribe(topic) first")
        from ..kafka.source import DEFAULTS, KafkaSource

        ready = self.turbo_queue_max_ready_files
        size = self.turbo_queue_max_events_per_file
        source = KafkaSource(
            self.folder, bootstrap_servers=self.kafka_brokers, topics=self._consumer_topic_list,
            group=self.kafka_group_id, value="json", item="value", config=self.settings(),
            max_ready_files=DEFAULTS["max_ready_files"] if ready is None else ready,
            batch_size=DEFAULTS["batch_size"] if size is None else size,
        )
        self._run(source)


class KafkaDequeue(_KafkaBase):
    """Produces the items of a turbo queue to ``kafka_producer_topic``, each as JSON, as 0.8.0 did.

    ``start()`` produces until ``stop()``, SIGTERM or SIGINT; an item is acknowledged only once
    the broker confirmed it, so a killed process loses nothing. With ``use_turbo_queue = False``,
    ``start()`` only connects, and ``add_event(event, topic)`` produces one event and waits for
    the broker to confirm it. The tuning attributes of 0.8.0 (``kafka_producer_buffer_item_max``,
    ``call_poll_per_events``, ``max_exception_per_doc``, ...) are kept and mean nothing now: the
    sink's own bound on what is in flight replaces them.
    """

    kafka_producer_topic = _Setting(str, "raw")

    def __init__(self) -> None:
        super().__init__()
        self.kafka_client_id = "default_turbo_queue_producer_client_id"
        self.kafka_statistics_interval_ms = 500
        self.kafka_producer_buffer_item_max = 10000
        self.kafka_producer_buffer_item_min = 100
        self.call_poll_per_events = 1000
        self.max_exception_per_doc = 10
        self.max_exception_total = 1000
        self.use_turbo_queue = True
        self.producer: Optional[Any] = None
        self._sent = 0
        self._started = 0.0

    def settings(self) -> Dict[str, Any]:
        """The librdkafka settings the producer gets (``acks=all`` and idempotence: 0.8.0 had ``acks=1``)."""
        return {"bootstrap.servers": self.kafka_brokers, "client.id": self.kafka_client_id, "acks": "all",
                "enable.idempotence": True, "linger.ms": 5}

    def description(self) -> str:
        return "This is a kafkaproducer"

    def start(self) -> None:
        """Produce the queue's items until ``stop()`` (or, without the queue, connect for ``add_event``)."""
        self._require("kafka_brokers")
        self._started = time.monotonic()
        if not self.use_turbo_queue:
            ck = import_confluent_kafka()
            self.producer = ck.Producer(self.settings())
            return
        self._require("turbo_queue_queue_name", "turbo_queue_root_path")
        from ..kafka.sink import KafkaSink

        config = {k: v for k, v in self.settings().items() if k != "bootstrap.servers"}
        self._run(KafkaSink(self.folder, bootstrap_servers=self.kafka_brokers, topic=self.kafka_producer_topic,
                            value="json", config=config))

    def add_event(self, event: Any, topic: str, timeout: float = 30.0) -> None:
        """Produce ``event`` as JSON to ``topic`` and wait until the broker confirms it.

        Only with ``use_turbo_queue = False`` (otherwise nothing happens, as in 0.8.0).
        Raises KafkaUnavailable when it is not confirmed within ``timeout`` seconds, TypeError
        for an event JSON cannot encode, RuntimeError before ``start()``.
        """
        if self.use_turbo_queue:
            return
        if self.producer is None:
            raise RuntimeError("KafkaDequeue.add_event(): call start() first")
        value = orjson.dumps(event)
        outcome: List[Any] = []
        self.producer.produce(topic, value, on_delivery=lambda error, _message: outcome.append(error))
        self.producer.flush(timeout)
        if not outcome:
            raise KafkaUnavailable(f"the broker at {self.kafka_brokers} did not confirm the event "
                                   f"within {timeout:g} s", self.kafka_brokers, topic)
        if outcome[0] is not None:
            raise KafkaUnavailable(f"the broker refused the event: {describe(Exception(outcome[0]))}",
                                   self.kafka_brokers, topic)
        self._sent += 1

    def poll(self, timeout: float) -> int:
        """Serve the producer's delivery reports (``add_event`` already waits for its own)."""
        return int(self.producer.poll(timeout)) if self.producer is not None else 0

    def state(self) -> bool:
        """Whether the producer takes more (always: the sink bounds what is in flight itself)."""
        return True

    @property
    def sentMsgCount(self) -> int:  # noqa: N802 (0.8.0's name)
        """Messages the broker has confirmed."""
        if self._connector is not None:
            return int(self._connector.counts["delivered"])
        return self._sent

    @property
    def queuedMsgCount(self) -> int:  # noqa: N802
        """Messages produced and not yet confirmed."""
        if self._connector is not None:
            return int(self._connector.in_flight)
        return len(self.producer) if self.producer is not None else 0

    @property
    def totalEvents(self) -> int:  # noqa: N802
        """Items taken from the queue (or events added)."""
        if self._connector is not None:
            return int(self._connector.counts["taken"])
        return self._sent

    @property
    def txEPS(self) -> float:  # noqa: N802
        """Confirmed messages per second since ``start()``."""
        elapsed = time.monotonic() - self._started if self._started else 0.0
        return self.sentMsgCount / elapsed if elapsed > 0 else 0.0
