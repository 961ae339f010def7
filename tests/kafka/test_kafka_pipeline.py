"""``turbo-queue pipeline`` against the genuine broker, with real processes: delivery, kills, stop, failures."""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Dict, List

import orjson

from tests.kafka.pipeline_process import PipelineProcess
from tests.kafka.source_process import numbered
from tests.support.supervised import wait_for

FUNCTIONS = "tests.kafka.pipeline_functions"


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Reader:
    """Reads a topic from its start, as the pipeline's outputs arrive, in a group of its own."""

    def __init__(self, kafka, topic: str) -> None:
        from confluent_kafka import Consumer

        self.consumer = Consumer(kafka.settings(group_id=name("reader"), auto_offset_reset="earliest",
                                                enable_auto_commit=False))
        self.consumer.subscribe([topic])
        self.records: List = []

    def until(self, condition, timeout: float = 90, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not condition(self.records):
            assert time.monotonic() < deadline, f"waited {timeout} s for {what}: {len(self.records)} records read"
            for message in self.consumer.consume(1000, 0.2):
                assert message.error() is None, message.error()
                self.records.append(message)

    def numbers(self) -> Dict[int, int]:
        """How often each event number arrived."""
        seen: Dict[int, int] = {}
        for record in self.records:
            n = orjson.loads(record.value())["n"]
            seen[n] = seen.get(n, 0) + 1
        return seen

    def close(self) -> None:
        self.consumer.close()


def all_of(count: int, start: int = 0):
    want = set(range(start, start + count))
    return lambda records: want <= {orjson.loads(r.value())["n"] for r in records}


def check_content(records) -> None:
    for record in records:
        event = orjson.loads(record.value())
        n = event["n"]
        assert event == {"n": n, "pad": "", "tagged": True}
        assert record.key() == f"k{n}".encode()
        assert record.headers() == [("n", str(n).encode()), ("empty", None), ("via", b"pipeline")]


def test_every_message_arrives_through_more_workers_than_partitions_and_sigterm_stops_cleanly(kafka, tmp_path):
    source, target, group = kafka.topic(partitions=2), kafka.topic(partitions=2), name("group")
    kafka.produce(source, numbered(0, 3000))
    reader = Reader(kafka, target)
    pipeline = PipelineProcess(kafka.bootstrap, source, target, group, f"{FUNCTIONS}:tag", log_dir=str(tmp_path),
                               workers=4)
    try:
        children = pipeline.wait_for_children(["source-0", "worker-0", "worker-1", "worker-2", "worker-3", "sink-0"])
        folder = pipeline.folder()
        assert folder.startswith("/dev/shm/")
        reader.until(all_of(3000), what="all 3000 messages")
        wait_for(lambda: kafka.committed(group, source) == kafka.end_offsets(source), 60, "every offset committed")
        assert pipeline.terminate() == 0, pipeline.log()
    finally:
        pipeline.close()
        reader.close()
    assert len(reader.records) == 3000  # nobody died: no duplicate
    check_content(reader.records)
    assert not pipeline.left_running() and set(children.values()) <= set(pipeline.seen)
    assert not os.path.exists(folder), "the private folder was not removed"


def test_sigkill_of_a_source_a_worker_and_a_sink_while_it_runs_loses_nothing(kafka, tmp_path):
    source, target, group = kafka.topic(partitions=3), kafka.topic(partitions=1), name("group")
    reader = Reader(kafka, target)
    producing = threading.Thread(target=lambda: [kafka.produce(source, numbered(i, i + 500)) or time.sleep(0.2)
                                                 for i in range(0, 3000, 500)])
    pipeline = PipelineProcess(kafka.bootstrap, source, target, group, f"{FUNCTIONS}:slow_tag", log_dir=str(tmp_path))
    producing.start()
    try:
        pipeline.wait_for_children(["source-0", "worker-2", "sink-0"])
        reader.until(lambda records: len(records) >= 300, what="the first outputs")
        for child in ("source-0", "worker-1", "sink-0"):
            pipeline.kill_child(child)
            time.sleep(0.3)
        producing.join()
        reader.until(all_of(3000), what="all 3000 messages after the kills")
        assert pipeline.terminate() == 0, pipeline.log()
    finally:
        producing.join()
        pipeline.close()
        reader.close()
    check_content(reader.records)
    log = pipeline.log()
    for child in ("source-0", "worker-1", "sink-0"):
        assert f"{child} (pid" in log and "was killed by SIGKILL" in log
    assert not pipeline.left_running()


def test_sigterm_mid_run_drains_delivers_everything_committed_and_a_restart_goes_on(kafka, tmp_path):
    source, target, group = kafka.topic(partitions=2), kafka.topic(partitions=1), name("group")
    kafka.produce(source, numbered(0, 1500))
    reader = Reader(kafka, target)
    folder = str(tmp_path / "pipeline")
    first = PipelineProcess(kafka.bootstrap, source, target, group, f"{FUNCTIONS}:slower_tag", "--folder", folder,
                            log_dir=str(tmp_path), workers=2)
    try:
        first.wait_for_children(["source-0", "worker-1", "sink-0"])
        reader.until(lambda records: len(records) >= 300, what="the first outputs")
        assert first.terminate() == 0, first.log()  # while the workers are busy: they drain, the sink delivers
    finally:
        first.close()
    assert not first.left_running()
    for sub in ("in", "out"):  # drained: no batch left waiting or in work
        assert not [n for n in os.listdir(os.path.join(folder, sub)) if n.endswith(".db")], os.listdir(folder)
    committed = kafka.committed(group, source)
    in_target = sum(kafka.end_offsets(target).values())  # the pipeline exited: all it produced is there
    reader.until(lambda records: len(records) >= in_target, what="what the first pipeline produced")
    delivered = set(reader.numbers())
    # Everything committed was delivered (offsets map to event numbers through what was produced).
    produced = {(m.partition(), m.offset()): orjson.loads(m.value())["n"] for m in kafka.consume(source, 1500)}
    assert {n for (partition, offset), n in produced.items() if offset < committed[partition]} <= delivered
    kafka.produce(source, numbered(1500, 3000))
    second = PipelineProcess(kafka.bootstrap, source, target, group, f"{FUNCTIONS}:slow_tag", "--folder", folder,
                             log_dir=str(tmp_path), workers=2)
    try:
        reader.until(all_of(3000), what="the rest after a restart on the same folder")
        assert second.terminate() == 0, second.log()
    finally:
        second.close()
        reader.close()
    check_content(reader.records)


def test_an_exception_in_the_function_sends_the_message_to_the_dead_letter_topic(kafka, tmp_path):
    source, target, dead, group = kafka.topic(2), kafka.topic(1), kafka.topic(1), name("group")
    kafka.produce(source, numbered(0, 2000))
    reader, dead_reader = Reader(kafka, target), Reader(kafka, dead)
    pipeline = PipelineProcess(kafka.bootstrap, source, target, group, f"{FUNCTIONS}:tag_but_fail_on_hundreds",
                               "--dead-letter", dead, log_dir=str(tmp_path), workers=2)
    try:
        wanted = set(range(2000)) - set(range(0, 2000, 100))
        reader.until(lambda records: wanted <= {orjson.loads(r.value())["n"] for r in records}, what="the good ones")
        dead_reader.until(lambda records: len(records) >= 20, what="the dead letters")
        assert pipeline.terminate() == 0, pipeline.log()
    finally:
        pipeline.close()
        reader.close()
        dead_reader.close()
    assert set(reader.numbers()) == wanted
    assert sorted(orjson.loads(r.value())["n"] for r in dead_reader.records) == list(range(0, 2000, 100))
    for record in dead_reader.records:
        n = orjson.loads(record.value())["n"]
        headers = dict(record.headers())
        assert headers["turbo_queue.reason"] == f"the function raised ValueError: event {n} is a round number".encode()
        assert headers["turbo_queue.origin"].startswith(source.encode() + b"/")
        assert record.key() == f"k{n}".encode()
