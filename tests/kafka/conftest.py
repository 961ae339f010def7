"""Fixtures for tests against a genuine Apache Kafka broker, started through tools/kafka_broker.py.

``kafka`` (session): one broker per pytest worker process, or the one at
``$TURBO_QUEUE_KAFKA_BOOTSTRAP`` when that is set. ``private_kafka`` (function): a broker of the
test's own, which the test may stop, kill and start again. Without Java (or without Maven and
no cached jars) or without confluent-kafka the tests skip and say why; under ``CI=true`` they fail.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import pytest

from tools import kafka_broker

CI = os.environ.get("CI") == "true"
#: The test clients' librdkafka lines go to logging (pytest shows them with a failure), not to stderr.
CLIENT_LOG = logging.getLogger("tests.kafka.client")
#: An already running broker to use instead of starting one.
BOOTSTRAP_ENV = "TURBO_QUEUE_KAFKA_BOOTSTRAP"


def _cannot_run(reason: str) -> None:
    if CI:
        pytest.fail(f"CI=true, and the Kafka tests cannot run: {reason}")
    pytest.skip(reason)


def _client_module():
    try:
        import confluent_kafka
    except ImportError:
        _cannot_run("confluent-kafka is not installed: pip install -e '.[test,kafka]'")
    return confluent_kafka


class Kafka:
    """A broker to test against, with helpers to make topics and to look at what is in them."""

    def __init__(self, bootstrap: str, broker: Optional[kafka_broker.Broker] = None) -> None:
        self.bootstrap = bootstrap
        self.broker = broker
        self._admin = None

    def settings(self, **extra: object) -> Dict[str, object]:
        """librdkafka settings for a client of this broker, plus ``extra`` (dots as underscores)."""
        settings: Dict[str, object] = {"bootstrap.servers": self.bootstrap, "logger": CLIENT_LOG}
        settings.update({key.replace("_", "."): value for key, value in extra.items()})
        return settings

    def admin(self):
        if self._admin is None:
            from confluent_kafka.admin import AdminClient

            self._admin = AdminClient(self.settings())
        return self._admin

    def topic(self, partitions: int = 1, *, prefix: str = "test", config: Optional[Dict[str, str]] = None) -> str:
        """A new topic with a unique name and ``partitions`` partitions, ready to use; returns its name."""
        from confluent_kafka.admin import NewTopic

        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        futures = self.admin().create_topics([NewTopic(name, partitions, 1, config=config or {})])
        futures[name].result(30)
        deadline = time.monotonic() + 30
        while True:  # created is not yet visible to every client: wait until metadata shows the leaders
            meta = self.admin().list_topics(name, timeout=10).topics.get(name)
            if meta is not None and meta.error is None and len(meta.partitions) == partitions and all(
                p.leader >= 0 for p in meta.partitions.values()
            ):
                return name
            assert time.monotonic() < deadline, f"topic {name} did not appear in metadata"
            time.sleep(0.05)

    def produce(
        self,
        topic: str,
        records: Iterable[Tuple[Optional[bytes], bytes, Optional[List[Tuple[str, bytes]]]]],
        *,
        partition: Optional[int] = None,
    ) -> int:
        """Produce ``(key, value, headers)`` records and wait until the broker has them all; returns the count."""
        from confluent_kafka import Producer

        producer = Producer(self.settings(acks="all", linger_ms=5))
        failed: List[str] = []

        def report(error, message) -> None:
            if error is not None:
                failed.append(str(error))

        count = 0
        for key, value, headers in records:
            extra = {} if partition is None else {"partition": partition}
            while True:
                try:
                    producer.produce(topic, value, key, headers=headers, on_delivery=report, **extra)
                    break
                except BufferError:
                    producer.poll(0.05)
            count += 1
        assert producer.flush(60) == 0, "records still in flight after 60 s"
        assert not failed, f"{len(failed)} records not delivered: {failed[:3]}"
        return count

    def consume(self, topic: str, count: int, timeout: float = 60.0) -> list:
        """Read ``count`` records of ``topic`` from the start, in a group of its own (committing nothing)."""
        from confluent_kafka import Consumer

        consumer = Consumer(self.settings(group_id=f"reader-{uuid.uuid4().hex[:8]}", auto_offset_reset="earliest",
                                          enable_auto_commit=False))
        consumer.subscribe([topic])
        records: list = []
        deadline = time.monotonic() + timeout
        try:
            while len(records) < count and time.monotonic() < deadline:
                for message in consumer.consume(1000, 0.5):
                    assert message.error() is None, message.error()
                    records.append(message)
        finally:
            consumer.close()
        return records

    def committed(self, group: str, topic: str) -> Dict[int, int]:
        """The offsets that ``group`` has committed on each partition of ``topic`` (-1001: none)."""
        from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

        partitions = self.admin().list_topics(topic, timeout=10).topics[topic].partitions
        consumer = Consumer(self.settings(group_id=group, enable_auto_commit=False))
        deadline = time.monotonic() + 30
        try:
            while True:
                try:
                    found = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
                    break
                except KafkaException as exc:
                    # The group's coordinator moves or loads (a broker that just started): ask again.
                    if time.monotonic() > deadline or not exc.args[0].retriable() and exc.args[0].code() not in (
                        KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                        KafkaError.COORDINATOR_NOT_AVAILABLE,
                    ):
                        raise
                    time.sleep(0.2)
        finally:
            consumer.close()
        return {tp.partition: tp.offset for tp in found}

    def end_offsets(self, topic: str) -> Dict[int, int]:
        """Each partition's high watermark: the offset the next record will get."""
        from confluent_kafka import Consumer, TopicPartition

        partitions = self.admin().list_topics(topic, timeout=10).topics[topic].partitions
        consumer = Consumer(self.settings(group_id=f"watermarks-{uuid.uuid4().hex[:8]}"))
        try:
            return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        finally:
            consumer.close()

    # A private broker's life (private_kafka only).

    def stop(self) -> None:
        """Stop the broker cleanly (SIGTERM); its data and port stay for start()."""
        assert self.broker is not None, "only a private_kafka broker may be stopped"
        self.broker.stop()

    def kill(self) -> None:
        """Kill the broker (SIGKILL); its data and port stay for start()."""
        assert self.broker is not None, "only a private_kafka broker may be killed"
        self.broker.kill()

    def start(self) -> None:
        """Start the stopped broker again, on the same data and port."""
        assert self.broker is not None, "only a private_kafka broker may be started"
        self.broker = self.broker.start()
        self._admin = None


def _start(data: Path) -> kafka_broker.Broker:
    _client_module()
    try:
        return kafka_broker.start(data)
    except kafka_broker.MissingTool as error:
        _cannot_run(f"no Kafka broker to test against: {error}")
        raise


@pytest.fixture(scope="session")
def confluent():
    """The confluent_kafka module, for a test that needs the client but no broker."""
    return _client_module()


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kafka]:
    """The session's broker (one per pytest worker process)."""
    external = os.environ.get(BOOTSTRAP_ENV)
    if external:
        _client_module()
        if not kafka_broker.answers(external, timeout=10):
            pytest.fail(f"${BOOTSTRAP_ENV}={external}, and no Kafka broker answers there")
        yield Kafka(external)
        return
    broker = _start(tmp_path_factory.mktemp("kafka"))
    try:
        yield Kafka(broker.bootstrap, broker)
    finally:
        broker.stop()


@pytest.fixture
def private_kafka(tmp_path: Path) -> Iterator[Kafka]:
    """A broker of this test's own, which it may stop, kill and start again."""
    broker = _start(tmp_path / "kafka")
    cluster = Kafka(broker.bootstrap, broker)
    try:
        yield cluster
    finally:
        assert cluster.broker is not None
        cluster.broker.stop()
