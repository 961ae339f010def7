"""What ``turbo-queue stats`` shows of a real source and a real sink against the genuine broker,
read from their status files only: the command runs where confluent-kafka cannot even be imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Dict, List

from tests.kafka.sink_process import SinkProcess, messages, put
from tests.kafka.source_process import SourceProcess, drain, numbered, wait_for


def stats(folder: str, *args: str, no_kafka: Path) -> subprocess.CompletedProcess:
    """``turbo-queue stats`` in a Python where ``import confluent_kafka`` fails."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(no_kafka), os.environ.get("PYTHONPATH", "")]),
               COLUMNS="200")
    result = subprocess.run([sys.executable, "-m", "turbo_queue", "stats", *args, folder], capture_output=True,
                            text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return result


def connectors(folder: str, no_kafka: Path) -> List[Dict[str, Any]]:
    (queue,) = json.loads(stats(folder, "--json", no_kafka=no_kafka).stdout)["queues"]
    assert queue["unreadable"] == []
    return queue["connectors"]  # type: ignore[no-any-return]


def no_kafka_client(tmp_path: Path) -> Path:
    """A folder that, first on the path, makes ``import confluent_kafka`` fail."""
    shadow = tmp_path / "no-kafka" / "confluent_kafka"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('the monitor must not need confluent-kafka')\n")
    return shadow.parent


def test_stats_shows_a_paused_source_with_its_partitions_and_lag(kafka, folder, tmp_path):
    no_kafka = no_kafka_client(tmp_path)
    topic, group = kafka.topic(partitions=2), f"group-{uuid.uuid4().hex[:8]}"
    kafka.produce(topic, numbered(0, 2000, size=100), partition=0)  # partition 1 stays empty for now
    with SourceProcess(folder, kafka.bootstrap, [topic], group, "--max-ready-files", "1") as source:
        # Nobody consumes: one ready_ batch is the limit, and the source pauses.
        wait_for(lambda: [c for c in connectors(folder, no_kafka) if c["paused"]], 60, "the source to pause")
        kafka.produce(topic, numbered(2000, 5000, size=100))  # these wait in Kafka, on both partitions
        end = kafka.end_offsets(topic)

        def caught_up() -> List[Dict[str, Any]]:
            return [c for c in connectors(folder, no_kafka)
                    if [p["high_watermark"] for p in c["partitions"]] == [end[0], end[1]]]

        (shown,) = wait_for(caught_up, 30, "the status to show the new high watermarks")
        committed = kafka.committed(group, topic)
        assert shown["kind"] == "source" and shown["pid"] == source.pid and shown["connector"] == f"source-{source.pid}"
        assert shown["group"] == group and shown["topics"] == [topic] and shown["bootstrap_servers"] == kafka.bootstrap
        assert shown["paused"] is True and shown["pauses"] >= 1
        assert [(p["topic"], p["partition"]) for p in shown["partitions"]] == [(topic, 0), (topic, 1)]
        assert 0 < committed[0] <= 2000 and committed[1] < 0  # it paused before partition 1 had a message
        first, second = shown["partitions"]
        assert first["committed"] == committed[0] and first["lag"] == end[0] - committed[0]
        assert second["committed"] is None and second["lag"] == end[1] > 0  # from the start: nothing committed
        assert all(p["paused"] for p in shown["partitions"])
        assert shown["lag"] == sum(end.values()) - committed[0] >= 3000
        assert shown["messages_in"] == committed[0]  # paused: everything taken is committed
        assert shown["commits"] >= 1

        text = stats(folder, no_kafka=no_kafka).stdout
        assert f"  source     pid {source.pid}   group {group}   topics {topic} at {kafka.bootstrap}" in text
        assert "paused: the folder's backlog is at its limit" in text
        assert f"{topic} [0]  {committed[0]:>13,}  {end[0]:>14,}  {end[0] - committed[0]:>11,}  paused" in text
        assert f"{topic} [1]  {'none':>13}  {end[1]:>14,}  {end[1]:>11,}  paused" in text

        from prometheus_client.parser import text_string_to_metric_families

        prom = stats(folder, "--prometheus", no_kafka=no_kafka).stdout
        lag = {s.labels["partition"]: s.value for f in text_string_to_metric_families(prom)
               if f.name == "turbo_queue_kafka_source_lag_messages" for s in f.samples}
        assert lag == {str(p["partition"]): p["lag"] for p in shown["partitions"]}

        got = drain(folder, 5000, timeout=120)  # consumers catch up: the source resumes and commits the rest
        assert len(got) == 5000
        done = wait_for(lambda: [c for c in connectors(folder, no_kafka)
                                 if not c["paused"] and c["lag"] == 0 and c["messages_in"] == 5000], 60,
                        "the source to resume and catch up")[0]
        assert all(not p["paused"] and p["committed"] == end[p["partition"]] for p in done["partitions"])
        assert source.terminate() == 0, source.log()
    assert connectors(folder, no_kafka) == []  # a clean stop removes its status


def test_stats_shows_a_sink_in_flight_and_delivered(kafka, folder, tmp_path):
    no_kafka = no_kafka_client(tmp_path)
    topic = kafka.topic(partitions=1)
    put(folder, messages(0, 3000))
    with SinkProcess(folder, kafka.bootstrap, topic) as sink:
        (shown,) = wait_for(lambda: [c for c in connectors(folder, no_kafka) if c["delivered"] == 3000], 60,
                            "the sink to deliver everything")
        assert shown["kind"] == "sink" and shown["pid"] == sink.pid and shown["connector"] == f"sink-{sink.pid}"
        assert shown["topic"] == topic and shown["bootstrap_servers"] == kafka.bootstrap
        assert shown["taken"] == 3000 and shown["in_flight"] == 0
        assert shown["errors"] == 0 and shown["set_aside"] == 0 and shown["dead_lettered"] == 0
        text = stats(folder, no_kafka=no_kafka).stdout
        assert f"  sink       pid {sink.pid}   topic {topic} at {kafka.bootstrap}" in text
        assert "0 in flight   3,000 delivered   0 errors   0 set aside" in text
        assert sink.terminate() == 0, sink.log()
    assert kafka.end_offsets(topic) == {0: 3000}  # what the sink said it delivered is in the topic
    assert connectors(folder, no_kafka) == []
