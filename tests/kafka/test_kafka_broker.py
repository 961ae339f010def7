"""tools/kafka_broker.py: the genuine broker that the Kafka tests and CI run against."""

from __future__ import annotations

import subprocess
import sys

from tests.kafka.conftest import Kafka
from tools import kafka_broker


def test_a_topic_round_trip(kafka):
    topic = kafka.topic(partitions=4)
    records = [(f"k{i}".encode(), f"v{i}".encode(), [("h", str(i).encode())]) for i in range(200)]
    assert kafka.produce(topic, records) == 200
    got = kafka.consume(topic, 200)
    assert sorted((m.key(), m.value(), tuple(m.headers())) for m in got) == sorted(
        (k, v, tuple(h)) for k, v, h in records
    )
    assert sum(kafka.end_offsets(topic).values()) == 200


def test_the_command_starts_and_stops_a_broker_that_keeps_its_data_and_port(tmp_path, confluent):
    data = tmp_path / "cli-broker"
    tool = [sys.executable, kafka_broker.__file__]
    started = subprocess.run([*tool, "start", "--data-dir", str(data)], capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    bootstrap = started.stdout.strip()
    try:
        assert bootstrap.startswith("127.0.0.1:") and kafka_broker.answers(bootstrap)
        cluster = Kafka(bootstrap)
        topic = cluster.topic(partitions=2)
        cluster.produce(topic, [(None, b"before", None)] * 50)
    finally:
        stopped = subprocess.run([*tool, "stop", "--data-dir", str(data)], capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    assert not (data / kafka_broker.PID_FILE).exists()
    assert not kafka_broker.answers(bootstrap, timeout=1)

    # From Python, on the same folder: the same port, the same data.
    broker = kafka_broker.start(data)
    try:
        assert broker.bootstrap == bootstrap
        cluster = Kafka(bootstrap, broker)
        cluster.produce(topic, [(None, b"after", None)] * 50)
        assert sum(cluster.end_offsets(topic).values()) == 100
    finally:
        broker.stop()
    assert not broker.running() and not (data / kafka_broker.PID_FILE).exists()
