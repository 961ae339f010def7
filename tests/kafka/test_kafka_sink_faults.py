"""KafkaSink under faults, against a genuine broker: SIGKILL again and again, a broker that goes
away and comes back. Real processes; every message is counted."""

from __future__ import annotations

import random
import threading
import time

from tests.support import listing
from tests.kafka.sink_process import SinkProcess, messages, numbers_in, put
from tests.kafka.source_process import wait_for
from turbo_queue import Enqueuer
from turbo_queue.kafka._errors import EXIT_OK
from turbo_queue.kafka.status import read_statuses

#: The sinks' --max-in-flight here: what a killed sink may produce again (README).
IN_FLIGHT = 2000


def status_of(folder: str, pid: int) -> dict:
    for status in read_statuses(folder):
        if status["pid"] == pid:
            return status
    return {}


def test_a_sink_killed_again_and_again_loses_nothing_and_duplicates_stay_within_the_bound(kafka, folder):
    topic, total = kafka.topic(partitions=2), 100_000
    put(folder, messages(0, total), batch_size=1500)
    rng = random.Random()

    def left() -> bool:
        return any(listing(folder)[state] for state in ("ready", "chosen"))

    kills = 0
    while kills < 4:
        with SinkProcess(folder, kafka.bootstrap, topic, "--max-in-flight", str(IN_FLIGHT)) as sink:
            # At a random moment once it has acknowledged something: a sink killed before it ever
            # acknowledges is a crash at the same item, and max_crashes of those set the item aside.
            # A fast broker may let one sink take everything first: then there is nothing left to kill it over.
            wait_for(lambda: status_of(folder, sink.pid).get("acks", 0) > 0 or not left(), 60,
                     "the sink to acknowledge")
            time.sleep(rng.uniform(0, 0.2))
            if not sink.running() or not left():
                break
            sink.kill()
            kills += 1
    assert kills, "the sink took every item before it could be killed once: the test proves nothing"
    with SinkProcess(folder, kafka.bootstrap, topic) as sink:
        wait_for(lambda: not left(), 90, "the folder to drain", interval=0.2)
        # The killed sinks may have taken everything: SIGTERM only once this one runs (its first
        # status is written after its signal handlers are set), or it dies of the signal.
        wait_for(lambda: status_of(folder, sink.pid), 60, "the sink to run")
        assert sink.terminate() == EXIT_OK, sink.log()
    records = kafka.consume(topic, sum(kafka.end_offsets(topic).values()))  # duplicates included
    seen = numbers_in(records)
    assert not listing(folder)["bad"], "an item was set aside"
    missing = set(range(total)) - set(seen)
    assert not missing, f"{len(missing)} messages lost after {kills} kills, e.g. {sorted(missing)[:5]}"
    duplicates = sum(seen.values()) - total
    print(f"{kills} kills, {duplicates} duplicates (bound {kills * IN_FLIGHT})")
    assert duplicates <= kills * IN_FLIGHT


def test_the_broker_away_for_10_s_mid_run_loses_nothing(private_kafka, folder):
    kafka = private_kafka
    topic, total = kafka.topic(partitions=2), 12_000
    failures = []

    def trickle() -> None:  # items keep coming while the broker is away
        try:
            with Enqueuer(folder, max_batch_delay=0.1) as producer:
                for start in range(0, total, 200):
                    producer.put_many(messages(start, start + 200))
                    time.sleep(0.1)
        except BaseException as exc:  # reported below
            failures.append(exc)

    feeder = threading.Thread(target=trickle)
    with SinkProcess(folder, kafka.bootstrap, topic, "--max-in-flight", str(IN_FLIGHT)) as sink:
        feeder.start()
        wait_for(lambda: status_of(folder, sink.pid).get("delivered", 0) >= 2000, 60, "deliveries before the stop")
        kafka.stop()
        time.sleep(10)
        assert sink.running(), sink.log()
        kafka.start()
        feeder.join(120)
        assert not failures and not feeder.is_alive()
        wait_for(lambda: not any(listing(folder)[s] for s in ("ready", "chosen")), 120, "the folder to drain",
                 interval=0.2)
        assert sink.terminate() == EXIT_OK, sink.log()
    records = kafka.consume(topic, sum(kafka.end_offsets(topic).values()))
    seen = numbers_in(records)
    missing = set(range(total)) - set(seen)
    assert not missing, f"{len(missing)} messages lost, e.g. {sorted(missing)[:5]}"
    assert not listing(folder)["bad"]
    assert sum(seen.values()) - total <= IN_FLIGHT
