"""Kafka to Kafka through two folders: topic A -> kafka-source -> folder -> 2 workers -> folder ->
kafka-sink -> topic B, against a genuine broker, in real processes; then the same with SIGKILLs."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Dict, List

import orjson

from tests.support import listing
from tests.kafka.pipeline_worker import WORKER_HEADER
from tests.kafka.sink_process import SinkProcess, numbers_in
from tests.kafka.source_process import SourceProcess, numbered, wait_for
from tests.kafka.test_kafka_source_faults import Trickle
from turbo_queue.kafka._errors import EXIT_OK
from turbo_queue.kafka.status import read_statuses

ROOT = Path(__file__).resolve().parents[2]
#: What one SIGKILL may deliver again, per process (README): a source its uncommitted messages
#: (batch_size + one poll), a worker its last get_many, a sink its --max-in-flight.
SOURCE_BOUND, WORKER_BOUND, SINK_BOUND = 10_000 + 1_000, 1_000, 2_000


class Worker:
    """``python -m tests.kafka.pipeline_worker`` in a process of its own."""

    def __init__(self, inbox: str, outbox: str, root: Path) -> None:
        self.progress = str(root / f"worker-{uuid.uuid4().hex[:8]}.progress")
        self.log_path = root / (os.path.basename(self.progress) + ".log")
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen([sys.executable, "-m", "tests.kafka.pipeline_worker", inbox, outbox,
                                         self.progress], cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)

    def done(self) -> int:
        try:
            return sum(int(line) for line in open(self.progress))
        except FileNotFoundError:
            return 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(60)
        self._log.close()

    def terminate(self) -> int:
        # The worker makes its progress file right after it set its SIGTERM handler: a worker just
        # started again could otherwise be terminated before it has one (exit -15, not a clean stop).
        deadline = time.monotonic() + 60
        while not os.path.exists(self.progress) and self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        self.process.terminate()
        try:
            return self.process.wait(60)
        finally:
            self._log.close()


def status(folder: str, pid: int) -> dict:
    return next((s for s in read_statuses(folder) if s["pid"] == pid), {})


def drained(*folders: str) -> bool:
    return not any(listing(folder)[state] for folder in folders for state in ("ready", "chosen", "loading"))


def everything_in(kafka, topic: str) -> list:
    return kafka.consume(topic, sum(kafka.end_offsets(topic).values()))


def check_content(records: list) -> None:
    """Each record of topic B is the worker's transform of the one put into topic A."""
    for record in records:
        n = int(record.key()[1:])
        value = orjson.loads(record.value())
        assert value["n"] == n and value["double"] == 2 * n, value
        assert record.headers() == [("n", str(n).encode()), ("empty", None), (WORKER_HEADER, b"yes")]
        assert record.timestamp()[1] > 0


def test_100000_messages_go_from_topic_to_topic_through_two_folders_and_two_workers(kafka, tmp_path):
    total = 100_000
    a, b = kafka.topic(partitions=4), kafka.topic(partitions=4)
    inbox, outbox = str(tmp_path / "inbox"), str(tmp_path / "outbox")
    kafka.produce(a, numbered(0, total))
    group = f"pipeline-{uuid.uuid4().hex[:8]}"
    source = SourceProcess(inbox, kafka.bootstrap, [a], group, log_dir=str(tmp_path))
    workers = [Worker(inbox, outbox, tmp_path) for _ in range(2)]
    sink = SinkProcess(outbox, kafka.bootstrap, b, log_dir=str(tmp_path))
    try:
        wait_for(lambda: sum(kafka.end_offsets(b).values()) >= total, 120, "every message in topic B", interval=0.5)
        wait_for(lambda: kafka.committed(group, a) == kafka.end_offsets(a), 60, "the source's offsets at the end")
        wait_for(lambda: drained(inbox, outbox), 30, "both folders to drain")
        assert all(w.done() > 0 for w in workers), "a worker did nothing"
    finally:
        codes = [source.terminate(), *[w.terminate() for w in workers], sink.terminate()]
    assert codes == [EXIT_OK] * 4, (source.log(), [w.log() for w in workers], sink.log())
    records = everything_in(kafka, b)
    assert len(records) == total and numbers_in(records) == Counter(range(total))  # each exactly once
    check_content(records)
    assert kafka.committed(group, a) == kafka.end_offsets(a)
    assert not listing(inbox)["bad"] and not listing(outbox)["bad"]


def test_sigkill_of_the_source_a_worker_and_the_sink_again_and_again_loses_nothing(kafka, tmp_path):
    total, rng = 40_000, random.Random()
    a, b = kafka.topic(partitions=4), kafka.topic(partitions=4)
    inbox, outbox = str(tmp_path / "inbox"), str(tmp_path / "outbox")
    group = f"pipeline-{uuid.uuid4().hex[:8]}"
    # A static member: a source started again takes its partitions back at once, with no wait for
    # the killed one's session to time out.
    source_args = ["-X", "group.instance.id=source-1", "-X", "session.timeout.ms=6000"]

    def start(role: str) -> object:
        if role == "source":
            return SourceProcess(inbox, kafka.bootstrap, [a], group, *source_args, log_dir=str(tmp_path))
        if role == "sink":
            return SinkProcess(outbox, kafka.bootstrap, b, "--max-in-flight", str(SINK_BOUND), log_dir=str(tmp_path))
        return Worker(inbox, outbox, tmp_path)

    def progressed(role: str, proc: object, before: int) -> bool:
        if role == "source":
            return status(inbox, proc.pid).get("commits", 0) > 0  # type: ignore[attr-defined]
        if role == "sink":
            return status(outbox, proc.pid).get("acks", 0) > 0  # type: ignore[attr-defined]
        return proc.done() > before  # type: ignore[attr-defined]

    procs: Dict[str, object] = {role: start(role) for role in ("source", "worker0", "worker1", "sink")}
    kills: Counter = Counter()
    feeder = Trickle(kafka, a, total, per_second=4000)
    feeder.start()
    try:
        schedule: List[str] = ["source", "sink", "worker0", "worker1"] * 3
        rng.shuffle(schedule)
        for role in schedule:
            proc = procs[role]
            # At a random moment once it made some progress: one killed before it ever
            # acknowledges would be a crash at the same item, and 3 of those set the item aside.
            wait_for(lambda: progressed(role, proc, 0) or not feeder.is_alive() and drained(inbox), 90,
                     f"the {role} to make progress", interval=0.1)
            time.sleep(rng.uniform(0, 1.0))
            proc.kill()  # type: ignore[attr-defined]
            kills[role.rstrip("01")] += 1
            procs[role] = start(role)
        feeder.finish()
        wait_for(lambda: kafka.committed(group, a) == kafka.end_offsets(a), 90, "the source's offsets at the end",
                 interval=0.5)
        wait_for(lambda: drained(inbox, outbox) and sum(kafka.end_offsets(b).values()) >= total, 90,
                 "both folders to drain", interval=0.5)
    finally:
        for role, proc in procs.items():
            if role in ("source", "sink"):  # its status file comes after its SIGTERM handler: a connector just
                folder = inbox if role == "source" else outbox  # started again could otherwise exit -15
                deadline = time.monotonic() + 60
                while (not status(folder, proc.pid) and proc.running()  # type: ignore[attr-defined]
                       and time.monotonic() < deadline):
                    time.sleep(0.05)
        codes = {role: proc.terminate() for role, proc in procs.items()}  # type: ignore[attr-defined]
    assert set(codes.values()) == {EXIT_OK}, codes
    records = everything_in(kafka, b)
    seen = numbers_in(records)
    assert not listing(inbox)["bad"] and not listing(outbox)["bad"], "items were set aside"
    missing = set(range(total)) - set(seen)
    assert not missing, f"{len(missing)} messages lost after kills {dict(kills)}, e.g. {sorted(missing)[:5]}"
    duplicates = sum(seen.values()) - total
    bound = kills["source"] * SOURCE_BOUND + kills["worker"] * WORKER_BOUND + kills["sink"] * SINK_BOUND
    print(f"kills {dict(kills)}: {duplicates} duplicates (bound {bound})")
    assert duplicates <= bound
    check_content(records)
