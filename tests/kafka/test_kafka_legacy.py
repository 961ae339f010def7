"""turbo-queue 0.8.0's KafkaEnqueue and KafkaDequeue, written as 0.8.0's users wrote them, against
a genuine broker: commit after hand-over, acknowledge after delivery, nothing lost to a SIGKILL."""

from __future__ import annotations

import json
import os
import queue
import signal

import orjson
import pytest

from tests.kafka.source_process import wait_for
from tests.support import Child, listing
from turbo_queue import Dequeuer, Enqueue, KafkaDequeue, KafkaEnqueue
from turbo_queue.kafka import KafkaUnavailable
from turbo_queue.kafka.status import read_statuses
from turbo_queue.monitor import read_items

#: A loader as 0.8.0's README wrote one (plus an earliest start: the topic is filled first).
LOADER = """
import sys
from turbo_queue import KafkaEnqueue


class Loader(KafkaEnqueue):
    def settings(self):  # a short session (0.8.0's is 60 s): the group notices a killed loader soon
        return {**super().settings(), "session.timeout.ms": int(session_ms), "heartbeat.interval.ms": 500}


bootstrap, root, name, group, topic, session_ms = sys.argv[1:]
loader = Loader() if session_ms != "0" else KafkaEnqueue()
loader.turbo_queue_queue_name = name
loader.turbo_queue_root_path = root
loader.turbo_queue_max_ready_files = 1000
loader.turbo_queue_max_events_per_file = 500
loader.kafka_client_id = "loader-1"
loader.kafka_brokers = bootstrap
loader.kafka_group_id = group
loader.kafka_auto_offset_reset = "earliest"
loader.kafka_subscribe(topic)
loader.start()
print("stopped", flush=True)
"""

#: A producer as 0.8.0's README wrote one.
UNLOADER = """
import sys
from turbo_queue import KafkaDequeue

bootstrap, root, name, topic = sys.argv[1:]
unloader = KafkaDequeue()
unloader.turbo_queue_queue_name = name
unloader.turbo_queue_root_path = root
unloader.kafka_brokers = bootstrap
unloader.kafka_producer_topic = topic
unloader.start()
print("stopped", flush=True)
"""


def ready_values(folder: str) -> list:
    values: list = []
    if not os.path.isdir(folder):  # the child has not made it yet
        return values
    for name in sorted(listing(folder)["ready"]):
        values.extend(read_items(os.path.join(folder, name), 10**9)[1])
    return values


def committed_or_zero(kafka, group: str, topic: str) -> dict:
    """The group's committed offset on each partition, 0 where it has committed none (an empty partition)."""
    return {partition: max(offset, 0) for partition, offset in kafka.committed(group, topic).items()}


def test_kafka_enqueue_puts_decoded_values_commits_them_and_sets_a_bad_one_aside(kafka, tmp_path):
    topic, group = kafka.topic(partitions=2), "legacy-loader"
    kafka.produce(topic, [(None, json.dumps({"n": n}).encode(), None) for n in range(3000)]
                  + [(None, b"not json", None)])
    folder = os.path.join(tmp_path, "q")
    loader = Child(LOADER, kafka.bootstrap, str(tmp_path), "q", group, topic, "0")
    try:
        wait_for(lambda: len(ready_values(folder)) == 3000 and listing(folder)["bad"], 60, "3,000 values")
        os.kill(loader.pid, signal.SIGTERM)
        assert loader.line() == "stopped"
        assert loader.proc.wait(30) == 0, loader.stderr
    finally:
        loader.close()
    values = ready_values(folder)
    assert sorted(v["n"] for v in values) == list(range(3000))  # the decoded value alone, as 0.8.0 put it
    # the bad one is set aside, and committed past (3,001 records; unkeyed, so a partition may hold none)
    assert committed_or_zero(kafka, group, topic) == kafka.end_offsets(topic)
    assert sum(kafka.end_offsets(topic).values()) == 3001


def test_kafka_enqueue_killed_loses_nothing(kafka, tmp_path):
    topic, group, total = kafka.topic(partitions=2), "legacy-killed", 20_000
    kafka.produce(topic, [(None, json.dumps({"n": n}).encode(), None) for n in range(total)])
    folder = os.path.join(tmp_path, "q")
    loader = Child(LOADER, kafka.bootstrap, str(tmp_path), "q", group, topic, "6000")
    try:
        wait_for(lambda: ready_values(folder), 60, "a first batch")
        loader.kill()
    finally:
        loader.close()
    again = Child(LOADER, kafka.bootstrap, str(tmp_path), "q", group, topic, "6000")
    try:
        wait_for(lambda: committed_or_zero(kafka, group, topic) == kafka.end_offsets(topic), 60, "every offset committed")
        # the killed loader may have committed everything already: SIGTERM only a loader that runs
        wait_for(lambda: any(s["pid"] == again.pid for s in read_statuses(folder)), 60, "the loader to run")
        os.kill(again.pid, signal.SIGTERM)
        assert again.proc.wait(30) == 0, again.stderr
    finally:
        again.close()
    got = []
    with Dequeuer(folder, recover_every=0.1) as dequeuer:
        while True:
            try:
                got.extend(dequeuer.get_many(10_000, timeout=2))
            except queue.Empty:
                break
    missing = set(range(total)) - {v["n"] for v in got}
    assert not missing, f"{len(missing)} values lost, e.g. {sorted(missing)[:5]}"


def test_kafka_dequeue_produces_what_enqueue_put_as_json_and_acknowledges_it(kafka, tmp_path):
    topic = kafka.topic(partitions=1)
    loader = Enqueue()
    loader.root_path, loader.queue_name = str(tmp_path), "out"
    loader.max_events_per_file = 100
    docs = [{"n": n} for n in range(1000)] + ["a string", 7, None]
    for doc in docs:
        loader.add(doc)
    loader.close()
    unloader = Child(UNLOADER, kafka.bootstrap, str(tmp_path), "out", topic)
    folder = os.path.join(tmp_path, "out")
    try:
        wait_for(lambda: not (listing(folder)["ready"] or listing(folder)["chosen"]), 60, "the queue to drain")
        os.kill(unloader.pid, signal.SIGTERM)
        assert unloader.line() == "stopped"
        assert unloader.proc.wait(30) == 0, unloader.stderr
    finally:
        unloader.close()
    records = kafka.consume(topic, len(docs))
    assert [orjson.loads(r.value()) for r in records] == docs  # every value JSON, the string too, as in 0.8.0
    assert not listing(folder)["bad"]


def test_kafka_dequeue_add_event_without_the_queue_waits_for_the_broker(kafka):
    topic = kafka.topic(partitions=1)
    unloader = KafkaDequeue()
    unloader.kafka_brokers = kafka.bootstrap
    unloader.use_turbo_queue = False
    unloader.start()
    unloader.add_event({"hello": "world"}, topic)
    assert unloader.sentMsgCount == 1
    assert [orjson.loads(r.value()) for r in kafka.consume(topic, 1)] == [{"hello": "world"}]


def test_kafka_dequeue_add_event_says_when_no_broker_confirms():
    unloader = KafkaDequeue()
    unloader.kafka_brokers = "127.0.0.1:1"
    unloader.use_turbo_queue = False
    unloader.start()
    with pytest.raises(KafkaUnavailable, match="did not confirm"):
        unloader.add_event({"n": 1}, "anywhere", timeout=1.0)


def test_missing_settings_are_named_at_start():
    with pytest.raises(ValueError, match="kafka_group_id.*kafka_brokers"):
        KafkaEnqueue().start()
    loader = KafkaEnqueue()
    for name in ("kafka_group_id", "kafka_client_id", "turbo_queue_queue_name", "turbo_queue_root_path",
                 "kafka_brokers"):
        setattr(loader, name, "x")
    with pytest.raises(ValueError, match="kafka_subscribe"):
        loader.start()
    with pytest.raises(ValueError, match="must be a str"):
        KafkaDequeue().kafka_producer_topic = 5
    with pytest.raises(ValueError, match="set turbo_queue_queue_name"):
        unloader = KafkaDequeue()
        unloader.kafka_brokers = "127.0.0.1:1"
        unloader.start()
