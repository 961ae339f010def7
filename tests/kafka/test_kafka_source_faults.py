"""KafkaSource under faults, against a genuine broker: SIGKILL, two sources in a group, a broker
that goes away, consumers that stall. Real processes; every message is counted."""

from __future__ import annotations

import random
import threading
import time
import uuid

from tests.kafka.source_process import SourceProcess, by_position, drain, numbered, ready_messages, wait_for
from turbo_queue.kafka.status import read_statuses

#: What a source killed with SIGKILL may deliver twice (README: one batch, under batch_size + one poll).
REDELIVERY_BOUND = 10_000 + 1_000
#: Group settings that let a killed source's partitions move soon.
FAST_GROUP = ["-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500"]


def group() -> str:
    return f"group-{uuid.uuid4().hex[:8]}"


class Trickle(threading.Thread):
    """Produces ``numbered(0, total)`` in small steps, so that messages keep coming during a test."""

    def __init__(self, kafka, topic: str, total: int, per_second: int) -> None:
        super().__init__(daemon=True)
        self.kafka, self.topic, self.total, self.step = kafka, topic, total, max(per_second // 10, 1)
        self.error = None

    def run(self) -> None:
        try:
            for start in range(0, self.total, self.step):
                self.kafka.produce(self.topic, numbered(start, min(start + self.step, self.total)))
                time.sleep(0.1)
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self) -> None:
        self.join(120)
        assert not self.is_alive() and self.error is None, self.error


def check_committed_is_handed_over(kafka, name: str, topic: str, folder: str, before: set) -> None:
    """Every offset below each committed one is in a ready_ batch (or was taken from one before)."""
    handed_over = before | {(m.partition, m.offset) for m in ready_messages(folder)}
    for partition, offset in kafka.committed(name, topic).items():
        missing = [o for o in range(max(offset, 0)) if (partition, o) not in handed_over]
        assert not missing, f"partition {partition}: committed {offset}, but offsets {missing[:5]}... are not in the folder"


def test_a_source_killed_again_and_again_loses_nothing(kafka, folder):
    topic, name, total = kafka.topic(partitions=4), group(), 7200
    rng = random.Random()
    producer = Trickle(kafka, topic, total, per_second=600)  # for about 12 s: the kills land while it runs
    producer.start()
    kills = 0
    while kills < 4:
        with SourceProcess(folder, kafka.bootstrap, [topic], name, *FAST_GROUP) as source:
            # A random moment while messages flow in, not while the process starts. Once the trickle
            # has ended (each kill costs a session timeout), a source may find nothing left to take:
            # then holding its partitions is running.
            wait_for(lambda: [s for s in read_statuses(folder) if s["pid"] == source.pid and (
                s["messages_in"] or (not producer.is_alive() and s["partitions"]))], 60,
                "the source to take messages")
            time.sleep(rng.uniform(0.0, 1.5))
            source.kill()
        kills += 1
        check_committed_is_handed_over(kafka, name, topic, folder, set())
    producer.finish()
    with SourceProcess(folder, kafka.bootstrap, [topic], name, *FAST_GROUP) as source:
        wait_for(lambda: [s for s in read_statuses(folder) if s["pid"] == source.pid], 60, "the source to run")
        wait_for(lambda: kafka.committed(name, topic) == kafka.end_offsets(topic), 90, "every offset committed")
        assert source.terminate() == 0, source.log()
    got = drain(folder, total, timeout=30)  # recovers the killed sources' loading_ batches too
    # With duplicates, `total` items come before every message did: take what is left as well.
    drain(folder, 10**9, timeout=3, into=got)
    seen = by_position(got)
    assert len(seen) == total, f"lost {total - len(seen)} of {total}"
    assert {int(m.key[1:]) for m in got} == set(range(total))
    duplicates = len(got) - total
    print(f"{kills} kills, {duplicates} duplicates")  # shown with -s
    assert duplicates <= kills * REDELIVERY_BOUND, (duplicates, kills)


def assigned(folder: str, pid: int) -> int:
    return sum(len(s["partitions"]) for s in read_statuses(folder) if s["pid"] == pid)


def test_two_sources_split_the_partitions_and_hand_them_over(kafka, folder):
    topic, name, total = kafka.topic(partitions=4), group(), 6000
    producer = Trickle(kafka, topic, total, per_second=1000)
    producer.start()
    first = SourceProcess(folder, kafka.bootstrap, [topic], name, *FAST_GROUP)
    second = SourceProcess(folder, kafka.bootstrap, [topic], name, *FAST_GROUP)
    with first, second:
        wait_for(lambda: assigned(folder, first.pid) == 2 and assigned(folder, second.pid) == 2, 60,
                 "the partitions split 2 + 2")
        # A clean stop hands over and commits before the partitions go: nothing comes twice.
        assert second.terminate() == 0, second.log()
        wait_for(lambda: assigned(folder, first.pid) == 4, 30, "the first source to take all four")
        producer.finish()
        wait_for(lambda: kafka.committed(name, topic) == kafka.end_offsets(topic), 60, "every offset committed")
        assert first.terminate() == 0, first.log()
    got = drain(folder, total, timeout=30)
    assert len(got) == total and len(by_position(got)) == total, "lost or duplicated on a clean hand-over"


def test_a_killed_sources_partitions_move_to_the_other_within_the_session_timeout(kafka, folder):
    topic, name, total = kafka.topic(partitions=4), group(), 6000
    producer = Trickle(kafka, topic, total, per_second=1000)
    producer.start()
    first = SourceProcess(folder, kafka.bootstrap, [topic], name, *FAST_GROUP)
    second = SourceProcess(folder, kafka.bootstrap, [topic], name, *FAST_GROUP)
    with first, second:
        wait_for(lambda: assigned(folder, first.pid) == 2 and assigned(folder, second.pid) == 2, 60,
                 "the partitions split 2 + 2")
        second.kill()
        killed = time.monotonic()
        # session.timeout.ms is 6 s; the rebalance after it takes a moment more on a busy machine.
        wait_for(lambda: assigned(folder, first.pid) == 4, 6 + 20, "the killed source's partitions to move")
        moved_after = time.monotonic() - killed
        producer.finish()
        wait_for(lambda: kafka.committed(name, topic) == kafka.end_offsets(topic), 60, "every offset committed")
        assert first.terminate() == 0, first.log()
    got = drain(folder, total, timeout=30)
    assert len(by_position(got)) == total, f"lost {total - len(by_position(got))} (moved after {moved_after:.1f} s)"
    assert len(got) - total <= REDELIVERY_BOUND


def test_a_broker_killed_for_ten_seconds_and_started_again(private_kafka, folder):
    kafka = private_kafka
    topic, name = kafka.topic(partitions=2), group()
    kafka.produce(topic, numbered(0, 2000))
    with SourceProcess(folder, kafka.bootstrap, [topic], name) as source:
        wait_for(lambda: kafka.committed(name, topic) == kafka.end_offsets(topic), 60, "the first 2000 committed")
        kafka.kill()  # SIGKILL: what it acknowledged survives in its log; the source waits
        time.sleep(10)
        assert source.running(), source.log()
        kafka.start()
        kafka.produce(topic, numbered(2000, 4000))
        wait_for(lambda: kafka.committed(name, topic) == kafka.end_offsets(topic), 90, "every offset committed")
        assert source.terminate() == 0, source.log()
    got = drain(folder, 4000, timeout=30)
    assert {int(m.key[1:]) for m in got} == set(range(4000))
    assert len(got) == 4000  # the source waited; nothing came twice either


def test_backpressure_pauses_the_partitions_and_memory_stays_flat(kafka, folder):
    topic, name = kafka.topic(partitions=2), group()
    kafka.produce(topic, numbered(0, 2000, size=1000))
    with SourceProcess(folder, kafka.bootstrap, [topic], name, "--max-ready-files", "1") as source:
        status = wait_for(lambda: [s for s in read_statuses(folder) if s["paused"]], 60, "the source to pause")[0]
        assert all(p["paused"] for p in status["partitions"])
        rss_paused = source.rss_kb()
        # 40 MB more wait in Kafka, not in the source.
        kafka.produce(topic, numbered(2000, 42_000, size=1000))
        end = sum(kafka.end_offsets(topic).values())
        time.sleep(3)
        committed = sum(max(o, 0) for o in kafka.committed(name, topic).values())
        assert end - committed >= 38_000, "the source went on consuming while paused"
        grown_mb = (source.rss_kb() - rss_paused) / 1024
        print(f"paused: RSS {rss_paused / 1024:.0f} MB, then {grown_mb:+.1f} MB with {end - committed} waiting")
        assert grown_mb < 20, f"the source's memory grew by {grown_mb:.0f} MB while paused"
        lag = wait_for(lambda: [p["lag"] for s in read_statuses(folder) for p in s["partitions"]
                                if p["lag"] is not None], 10, "the status file to show the lag")
        assert sum(lag) >= 38_000
        got = drain(folder, 42_000, timeout=120)  # consumers catch up: the source resumes
        assert source.running()
        assert {int(m.key[1:]) for m in got} == set(range(42_000)) and len(got) == 42_000
        assert source.terminate() == 0, source.log()
    assert kafka.committed(name, topic) == kafka.end_offsets(topic)
