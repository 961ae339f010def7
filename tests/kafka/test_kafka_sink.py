"""KafkaSink against a genuine broker: what arrives, what is set aside, and each bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import orjson
import pytest

from tests.support import listing
from tests.kafka.sink_process import SinkProcess, messages, numbers_in, put
from tests.kafka.source_process import wait_for
from tools import kafka_broker
from turbo_queue.kafka import KafkaSink, KafkaUnavailable
from turbo_queue.kafka._errors import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from turbo_queue.kafka.sink import REASON_HEADER, TOPIC_HEADER
from turbo_queue.kafka.status import read_statuses
from turbo_queue.monitor import read_items


def folder_is_empty(folder: str) -> bool:
    groups = listing(folder)
    return not any(groups[state] for state in ("loading", "ready", "chosen", "bad"))


def test_every_message_arrives_with_its_key_headers_and_timestamp(kafka, folder):
    topic = kafka.topic(partitions=3)
    sent = messages(0, 3000)
    put(folder, sent, batch_size=700)  # several batches
    with SinkProcess(folder, kafka.bootstrap, topic, "--max-in-flight", "1000") as sink:
        records = kafka.consume(topic, 3000)
        status = wait_for(lambda: [s for s in read_statuses(folder) if s["delivered"] == 3000], 60,
                          "the status file to count every message")[0]
        assert status["kind"] == "sink" and status["topic"] == topic and status["pid"] == sink.pid
        assert status["set_aside"] == 0
        wait_for(lambda: folder_is_empty(folder), 30, "every batch acknowledged and deleted")
        assert sink.terminate() == EXIT_OK, sink.log()
    assert read_statuses(folder) == []  # removed on a clean stop
    assert sorted(numbers_in(records).values()) == [1] * 3000 and len(records) == 3000
    for record in records:
        original = sent[int(record.key()[1:])]
        assert record.value() == original.value
        assert record.headers() == original.headers
        assert record.timestamp()[1] == original.timestamp
    assert len({r.partition() for r in records}) == 3
    # The partition comes from the key (librdkafka's partitioner), not from where the message came
    # from: the same keys produced again land where they did.
    put(folder, messages(0, 300))
    with SinkProcess(folder, kafka.bootstrap, topic) as sink:
        everything = kafka.consume(topic, 3300)
        assert sink.terminate() == EXIT_OK, sink.log()
    by_key = {}
    for record in everything:
        by_key.setdefault(record.key(), set()).add(record.partition())
    assert len(everything) == 3300 and all(len(partitions) == 1 for partitions in by_key.values())


def test_plain_values_and_a_fixed_partition_from_python_until_stop(kafka, folder):
    topic = kafka.topic(partitions=2)
    items = [b"raw bytes", "text", {"n": 1, "list": [1, 2]}, [3, 4], 5, None]
    put(folder, items)
    sink = KafkaSink(folder, bootstrap_servers=kafka.bootstrap, topic=topic, partition=1)
    errors = []

    def run() -> None:
        try:
            sink.run()
        except BaseException as exc:  # reported below
            errors.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    try:
        records = kafka.consume(topic, len(items))
        wait_for(lambda: folder_is_empty(folder), 30, "every batch acknowledged")
    finally:
        sink.stop()
        runner.join(60)
    assert not runner.is_alive() and not errors
    assert [r.value() for r in records] == [b"raw bytes", b"text", orjson.dumps(items[2]), b"[3,4]", b"5", None]
    assert {r.partition() for r in records} == {1} and all(r.key() is None for r in records)
    assert sink.counts["delivered"] == len(items) and sink.in_flight == 0


@pytest.mark.parametrize("extra", [[], ["-X", "batch.size=1000000"]], ids=["batches-fit-the-topic", "large-batches"])
def test_a_message_the_broker_refuses_is_set_aside_with_the_reason_and_the_rest_goes_on(kafka, folder, extra):
    # The broker refuses a whole record batch that is too large for the topic. The sink keeps its
    # batches within the topic's limit, or with a batch.size of the user's, produces the messages
    # of a refused batch again one by one: either way only the messages too large alone are refused.
    topic = kafka.topic(partitions=1, config={"max.message.bytes": "2000"})
    items = messages(0, 200)
    for n in (17, 120):
        items[n] = items[n]._replace(value=b"x" * 5000)  # larger than the topic takes
    put(folder, items)
    items_after = messages(200, 300)
    with SinkProcess(folder, kafka.bootstrap, topic, *extra) as sink:
        records = kafka.consume(topic, 198)
        put(folder, items_after)  # the sink goes on
        records += kafka.consume(topic, 298)[198:]
        wait_for(lambda: not listing(folder)["chosen"] and not listing(folder)["ready"], 30, "every batch done")
        assert sink.terminate() == EXIT_OK, sink.log()
    assert sorted(numbers_in(records)) == sorted(set(range(300)) - {17, 120})
    (bad,) = listing(folder)["bad"]
    meta, kept = read_items(os.path.join(folder, bad), 10)
    assert kept == [items[17], items[120]]
    assert topic in str(meta["reason"]) and "too large" in str(meta["reason"]).lower()
    assert "not delivered" in sink.log()


def test_a_refused_message_goes_to_the_dead_letter_topic_when_one_is_given(kafka, folder):
    topic = kafka.topic(partitions=1, config={"max.message.bytes": "2000"})
    dead = kafka.topic(partitions=1)
    items = messages(0, 50)
    items[7] = items[7]._replace(value=b"y" * 5000)
    put(folder, items)
    with SinkProcess(folder, kafka.bootstrap, topic, "--dead-letter", dead) as sink:
        records = kafka.consume(topic, 49)
        (refused,) = kafka.consume(dead, 1)
        wait_for(lambda: folder_is_empty(folder), 30, "every batch acknowledged")
        assert sink.terminate() == EXIT_OK, sink.log()
    assert sorted(numbers_in(records)) == [n for n in range(50) if n != 7]
    assert refused.key() == b"k7" and refused.value() == b"y" * 5000
    headers = dict(refused.headers())
    assert "too large" in headers[REASON_HEADER].decode().lower() and headers[TOPIC_HEADER] == topic.encode()
    assert headers["n"] == b"7"


def test_an_unreachable_broker_or_a_missing_topic_exits_4_naming_it(kafka, folder):
    address = f"127.0.0.1:{kafka_broker.free_port()}"
    with SinkProcess(folder, address, "t", "--connect-timeout", "2") as sink:
        assert sink.wait(60) == EXIT_UNAVAILABLE
        assert address in sink.log() and "no Kafka broker answered" in sink.log()
    with SinkProcess(folder, kafka.bootstrap, "no-such-topic", "--connect-timeout", "2") as sink:
        assert sink.wait(60) == EXIT_UNAVAILABLE
        assert "'no-such-topic' does not exist" in sink.log()
    topic = kafka.topic()
    with SinkProcess(folder, kafka.bootstrap, topic, "--dead-letter", "no-dead-topic", "--connect-timeout", "2") as sink:
        assert sink.wait(60) == EXIT_UNAVAILABLE
        assert "'no-dead-topic' does not exist" in sink.log()
    with pytest.raises(KafkaUnavailable) as caught:
        KafkaSink(folder, bootstrap_servers=address, topic="t", connect_timeout=1).run()
    assert caught.value.bootstrap == address
    with SinkProcess(folder, kafka.bootstrap, topic, "--partition", "5", "--connect-timeout", "5") as sink:
        assert sink.wait(60) == EXIT_USAGE and "partition 5 does not exist" in sink.log()
    assert folder_is_empty(folder) and read_statuses(folder) == []


def test_sigterm_while_no_broker_answers_is_a_clean_stop(folder):
    address = f"127.0.0.1:{kafka_broker.free_port()}"
    with SinkProcess(folder, address, "t", "--connect-timeout", "120") as sink:
        wait_for(lambda: "Connection refused" in sink.log(), 60, "the sink to try the address")
        assert sink.terminate(timeout=30) == EXIT_OK, sink.log()
    assert read_statuses(folder) == [] and folder_is_empty(folder)


def test_bad_settings_are_refused_at_once(folder):
    for bad, message in [({"topic": ""}, "topic must name"), ({"max_in_flight": 0}, "max_in_flight"),
                         ({"partition": -1}, "partition must"), ({"dead_letter": "t"}, "another topic"),
                         ({"colour": "red"}, "unknown KafkaSink setting"),
                         ({"value": "avro"}, "value must be 'auto' or 'json'"),
                         ({"durable": "no"}, "durable must be True or False"),
                         ({"stop_timeout": True}, "stop_timeout must be a positive number")]:
        settings = {"bootstrap_servers": "127.0.0.1:9", "topic": "t", **bad}
        with pytest.raises(ValueError, match=message):
            KafkaSink(folder, **settings)
    result = subprocess.run([sys.executable, "-m", "turbo_queue", "kafka-sink", folder, "--topic", "t"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == EXIT_USAGE and "--bootstrap-servers" in result.stderr


def test_without_confluent_kafka_the_package_imports_and_run_says_what_to_install(folder):
    code = f"""
import sys
sys.modules["confluent_kafka"] = None  # as if it were not installed
from turbo_queue.kafka import KafkaSink, Message
sink = KafkaSink({folder!r}, bootstrap_servers="127.0.0.1:9", topic="t")
try:
    sink.run()
except ImportError as exc:
    print(exc)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "pip install 'turbo-queue[kafka]'" in result.stdout


def test_sigterm_delivers_what_is_in_flight_and_acknowledges_it(kafka, folder):
    topic = kafka.topic(partitions=2)
    put(folder, messages(0, 20_000), batch_size=2000)
    with SinkProcess(folder, kafka.bootstrap, topic, "--max-in-flight", "5000") as sink:
        wait_for(lambda: [s for s in read_statuses(folder) if s["delivered"] > 0], 60, "the sink to deliver")
        assert sink.terminate() == EXIT_OK, sink.log()
    assert not listing(folder)["chosen"] and read_statuses(folder) == []
    delivered = kafka.end_offsets(topic)
    total = sum(delivered.values())
    left = sum(len(read_items(os.path.join(folder, name), 10**6)[1]) for name in listing(folder)["ready"])
    assert total + left == 20_000  # what reached the topic was acknowledged; the rest waits in the folder


def test_refused_messages_of_the_same_key_and_value_are_each_set_aside_once(kafka, folder):
    # A delivery report names a message only by its key and value: items alike in both are each
    # taken for the refused one, and each ends in the bad_ batch exactly once.
    topic = kafka.topic(partitions=1, config={"max.message.bytes": "2000"})
    items = messages(0, 50)
    for n in (5, 20, 40):
        items[n] = items[n]._replace(value=b"y" * 5000, key=b"same")
    put(folder, items)
    with SinkProcess(folder, kafka.bootstrap, topic) as sink:
        records = kafka.consume(topic, 47)
        wait_for(lambda: not listing(folder)["chosen"] and not listing(folder)["ready"], 30, "every batch done")
        assert sink.terminate() == EXIT_OK, sink.log()
    assert sorted(numbers_in(records)) == sorted(set(range(50)) - {5, 20, 40})
    (bad,) = listing(folder)["bad"]
    _, kept = read_items(os.path.join(folder, bad), 10)
    assert kept == [items[5], items[20], items[40]]
