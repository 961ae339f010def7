"""KafkaSource against a genuine broker: what arrives, what is committed, and each bad input."""

from __future__ import annotations

import os
import threading
import uuid

import pytest

from tests.kafka.source_process import SourceProcess, by_position, drain, numbered, ready_messages, wait_for
from turbo_queue.kafka import KafkaSource, KafkaUnavailable, Message
from turbo_queue.kafka._errors import EXIT_UNAVAILABLE
from turbo_queue.kafka.status import read_statuses
from turbo_queue.monitor import read_meta


def group() -> str:
    return f"group-{uuid.uuid4().hex[:8]}"


def test_every_message_arrives_with_what_it_had_and_the_commits_follow_the_rules(kafka, folder):
    topic = kafka.topic(partitions=4)
    kafka.produce(topic, numbered(0, 3000))
    sent = {(m.topic(), m.partition(), m.offset()): m for m in kafka.consume(topic, 3000)}
    name = group()
    with SourceProcess(folder, kafka.bootstrap, [topic], name) as source:
        # Everything committed is in a handed-over batch at every moment the source runs.
        for _ in range(5):
            committed = kafka.committed(name, topic)
            handed_over = {(m.partition, m.offset) for m in ready_messages(folder)}
            for partition, offset in committed.items():
                assert all((partition, o) in handed_over for o in range(max(offset, 0))), (partition, offset)
        status = wait_for(lambda: [s for s in read_statuses(folder) if s["messages_in"] == 3000], 60,
                          "the status file to count every message")[0]
        assert status["kind"] == "source" and status["group"] == name and status["pid"] == source.pid
        assert sorted(p["partition"] for p in status["partitions"]) == [0, 1, 2, 3]
        wait_for(lambda: kafka.committed(name, topic) == kafka.end_offsets(topic), 60, "every offset committed")
        assert source.terminate() == 0, source.log()
    assert read_statuses(folder) == []  # removed on a clean stop
    got = drain(folder, 3000)
    assert len(got) == 3000 and len(by_position(got)) == 3000
    for m in got:
        assert isinstance(m, Message)
        original = sent[(m.topic, m.partition, m.offset)]
        assert m.value == original.value() and isinstance(m.value, bytes)
        assert m.key == original.key()
        assert m.headers == original.headers() and m.headers[1] == ("empty", None)
        assert m.timestamp == original.timestamp()[1] and m.timestamp > 0
    assert kafka.committed(name, topic) == kafka.end_offsets(topic)


def test_from_python_with_a_regex_subscription_until_stop_from_another_thread(kafka, folder):
    prefix = f"rx{uuid.uuid4().hex[:8]}"
    a, b = kafka.topic(partitions=2, prefix=prefix), kafka.topic(partitions=1, prefix=prefix)
    kafka.produce(a, numbered(0, 500))
    kafka.produce(b, numbered(500, 800))
    source = KafkaSource(folder, bootstrap_servers=kafka.bootstrap, topics=f"^{prefix}-.*", group=group(),
                         value="json", commit_interval=0.2)
    errors = []

    def run() -> None:
        try:
            source.run()
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    try:
        got = drain(folder, 800)
    finally:
        source.stop()
        runner.join(60)
    assert not runner.is_alive() and not errors
    assert sorted(m.value["n"] for m in got) == list(range(800))
    assert {m.topic for m in got} == {a, b}


def test_an_unreachable_broker_is_named_within_the_connect_timeout(confluent, folder):
    import socket

    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    source = SourceProcess(folder, address, ["events"], group(), "--connect-timeout", "3")
    assert source.wait(timeout=40) == EXIT_UNAVAILABLE
    assert f"no Kafka broker answered at {address} within 3 s" in source.log()

    with pytest.raises(KafkaUnavailable, match=address):
        KafkaSource(folder, bootstrap_servers=address, topics="events", group="g", connect_timeout=1).run()


def test_a_missing_topic_is_named(kafka, folder):
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    existing = kafka.topic()
    source = SourceProcess(folder, kafka.bootstrap, [existing, missing], group(), "--connect-timeout", "2")
    assert source.wait(timeout=40) == EXIT_UNAVAILABLE
    assert f"topic '{missing}' does not exist at {kafka.bootstrap}" in source.log()
    assert os.listdir(folder) == []


def bad_json_records():
    good = numbered(0, 300)
    bad = [(f"bad{i}".encode(), b"{not json " + str(i).encode(), [("n", b"bad")]) for i in range(5)]
    return good[:100] + bad[:2] + good[100:200] + bad[2:] + good[200:]


def test_a_value_that_is_not_json_is_set_aside_in_a_bad_batch_with_the_reason(kafka, folder):
    topic = kafka.topic(partitions=1)
    kafka.produce(topic, bad_json_records())
    name = group()
    with SourceProcess(folder, kafka.bootstrap, [topic], name, "--value", "json") as source:
        wait_for(lambda: kafka.committed(name, topic) == {0: 305}, 60, "every offset committed")
        assert source.terminate() == 0, source.log()
    bad = sorted(n for n in os.listdir(folder) if n.startswith("bad_"))
    assert len(bad) == 5
    aside = []
    for batch in bad:
        path = os.path.join(folder, batch)
        assert "is not JSON" in read_meta(path)["reason"]
        from turbo_queue.monitor import read_items

        aside.extend(read_items(path, 10)[1])
    assert sorted(m.key for m in aside) == [f"bad{i}".encode() for i in range(5)]
    assert all(isinstance(m.value, bytes) for m in aside)  # as it came
    got = drain(folder, 300)
    assert sorted(m.value["n"] for m in got) == list(range(300))


def test_a_value_that_is_not_json_goes_to_the_dead_letter_topic_with_the_reason(kafka, folder):
    topic, dead = kafka.topic(partitions=1), kafka.topic(partitions=1, prefix="dead")
    kafka.produce(topic, bad_json_records())
    name = group()
    with SourceProcess(folder, kafka.bootstrap, [topic], name, "--value", "json", "--dead-letter", dead) as source:
        wait_for(lambda: kafka.committed(name, topic) == {0: 305}, 60, "every offset committed")
        assert source.terminate() == 0, source.log()
    assert not [n for n in os.listdir(folder) if n.startswith("bad_")]
    letters = kafka.consume(dead, 5)
    assert sorted(m.key() for m in letters) == [f"bad{i}".encode() for i in range(5)]
    for m in letters:
        headers = dict(m.headers())
        assert headers["n"] == b"bad"
        assert b"is not JSON" in headers["turbo_queue.reason"]
        assert headers["turbo_queue.origin"].startswith(f"{topic}/0/".encode())
    assert sorted(m.value["n"] for m in drain(folder, 300)) == list(range(300))


def test_settings_that_would_break_at_least_once_are_refused(folder):
    with pytest.raises(ValueError, match="enable.auto.commit"):
        KafkaSource(folder, bootstrap_servers="x:1", topics="t", group="g", config={"enable.auto.commit": True})
    with pytest.raises(ValueError, match="unknown KafkaSource setting"):
        KafkaSource(folder, bootstrap_servers="x:1", topics="t", group="g", max_ready=3)
    with pytest.raises(ValueError, match="value must be"):
        KafkaSource(folder, bootstrap_servers="x:1", topics="t", group="g", value="avro")
    with pytest.raises(ValueError, match="item must be 'message' or 'value'"):
        KafkaSource(folder, bootstrap_servers="x:1", topics="t", group="g", item="key")
    with pytest.raises(ValueError, match="durable must be True or False"):
        KafkaSource(folder, bootstrap_servers="x:1", topics="t", group="g", durable="no")
    with pytest.raises(ValueError, match="commit_interval must be a positive number"):
        KafkaSource(folder, bootstrap_servers="x:1", topics="t", group="g", commit_interval=True)


def test_a_folder_on_a_network_filesystem_is_refused(monkeypatch, tmp_path):
    from turbo_queue import NetworkFilesystemError, _platform

    monkeypatch.setattr(_platform, "mount_type", lambda path: "nfs4")
    with pytest.raises(NetworkFilesystemError, match="nfs4"):
        KafkaSource(tmp_path / "queue", bootstrap_servers="x:1", topics="t", group="g")


def test_a_backlog_counted_in_items_pauses_the_source_too(kafka, folder):
    topic, name = kafka.topic(partitions=1), group()
    kafka.produce(topic, numbered(0, 3000))
    with SourceProcess(folder, kafka.bootstrap, [topic], name, "--max-ready-items", "500") as source:
        wait_for(lambda: [s for s in read_statuses(folder) if s["paused"]], 60, "the source to pause")
        from turbo_queue.monitor import snapshot

        assert snapshot(folder).backlog_items >= 500
        got = drain(folder, 3000)
        assert sorted(m.value for m in got) == sorted(v for _, v, _ in numbered(0, 3000))
        assert source.terminate() == 0, source.log()
