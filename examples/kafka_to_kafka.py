"""Kafka -> parse and enrich JSON events in many processes -> Kafka, with ``turbo_queue.kafka.Pipeline``.

Run it against a broker (``python tools/kafka_broker.py start --data-dir /tmp/kafka`` prints one):

    python examples/kafka_to_kafka.py --bootstrap-servers 127.0.0.1:PORT --events 20000 --workers 4

It makes two topics (the input with ONE partition: the workers still share the work), fills the
input with JSON events, runs the pipeline until every enriched event is in the output topic,
prints the throughput, and stops the pipeline (as SIGTERM would: in order, nothing lost).

``enrich`` is a plain function, so the command runs it the same way (from this folder):

    turbo-queue pipeline --bootstrap-servers 127.0.0.1:PORT --from events --to enriched \\
        --group enrich --workers 4 --value json kafka_to_kafka:enrich
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import re
import signal
import sys
import time
import uuid
from typing import Any, Dict

import orjson

from turbo_queue.kafka import Message, Pipeline

_BROWSER = re.compile(r"(Firefox|Chrome|Safari|Edge)/(\d+)")
_PLATFORM = re.compile(r"\((Windows|Macintosh|Linux|iPhone|Android)[^)]*\)")
_SECTIONS = {"/cart": "shop", "/checkout": "shop", "/search": "discovery", "/item": "discovery", "/help": "support"}


def enrich(message: Message) -> Message:
    """Parse one event and add what a downstream consumer wants: the CPU-heavy part of the job.

    The value is a dict when the pipeline runs with ``--value json`` (bytes otherwise). The
    output keeps the user as its key, so one user's events stay in one partition.
    """
    event: Dict[str, Any] = message.value if isinstance(message.value, dict) else orjson.loads(message.value)
    agent = event.get("agent", "")
    browser = _BROWSER.search(agent)
    platform = _PLATFORM.search(agent)
    path = event.get("url", "/").split("?", 1)[0]
    # A pseudonym for the user: a stretched hash, as a privacy rule may ask (most of the CPU time).
    pseudonym = hashlib.pbkdf2_hmac("sha256", event["user"].encode(), b"turbo-queue-example", 60).hex()[:16]
    score = sum((ord(c) * (i + 1)) % 97 for i, c in enumerate(path + agent)) / 97.0
    enriched = {
        **event,
        "user": pseudonym,
        "browser": browser.group(1) if browser else "other",
        "browser_version": int(browser.group(2)) if browser else None,
        "platform": platform.group(1) if platform else "other",
        "section": next((name for prefix, name in _SECTIONS.items() if path.startswith(prefix)), "other"),
        "cents": round(float(event.get("amount", 0)) * 100),
        "score": round(score, 3),
    }
    return Message(orjson.dumps(enriched), key=pseudonym.encode(), headers=message.headers)


def make_event(n: int) -> bytes:
    agents = ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120 Safari/537.36",
              "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) Safari/17",
              "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121"]
    urls = ["/cart?item=%d" % n, "/search?q=shoes", "/item/%d" % (n % 500), "/help/returns", "/"]
    return orjson.dumps({"id": n, "user": f"user-{n % 1000}", "agent": agents[n % 3], "url": urls[n % 5],
                         "amount": f"{n % 100}.{n % 97:02d}", "ts": 1_700_000_000_000 + n})


def _make_topics(bootstrap: str, names: Dict[str, int]) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, count, 1) for name, count in names.items()]).values():
        future.result(30)
    deadline = time.monotonic() + 30
    while not all(name in admin.list_topics(timeout=10).topics for name in names):
        assert time.monotonic() < deadline, "the new topics did not appear"
        time.sleep(0.1)


def fill(bootstrap: str, topic: str, events: int) -> None:
    """Produce ``events`` JSON events (about 200 bytes each) to ``topic``."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for n in range(events):
        while True:
            try:
                producer.produce(topic, make_event(n), key=str(n).encode())
                break
            except BufferError:
                producer.poll(0.1)
    if producer.flush(60):
        raise SystemExit("the broker did not take every event within 60 s")


def count_output(bootstrap: str, topic: str, events: int, parent: int, results: Any) -> None:
    """Read ``topic`` until every event id arrived; report (seconds after the first, distinct, total); stop the parent."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    seen, total = set(), 0
    try:
        while len(seen) < events:
            for record in consumer.consume(1000, 0.5):
                if record.error() is None:
                    seen.add(orjson.loads(record.value())["id"])
                    total += 1
    finally:
        consumer.close()
    results.put((time.time(), len(seen), total))
    os.kill(parent, signal.SIGTERM)  # the pipeline stops in order, as on any SIGTERM


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap-servers", required=True, metavar="HOST:PORT")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    source, target = f"events-{tag}", f"enriched-{tag}"
    # Kafka clients run in processes of their own: the pipeline forks its children from this one.
    spawn = multiprocessing.get_context("spawn")
    for job, job_args in ((_make_topics, (args.bootstrap_servers, {source: 1, target: 4})),
                          (fill, (args.bootstrap_servers, source, args.events))):
        helper = spawn.Process(target=job, args=job_args)
        helper.start()
        helper.join()
        if helper.exitcode:
            return 1
    print(f"{args.events:,} events in {source} (1 partition) -> {args.workers} workers -> {target}")
    results = spawn.Queue()
    counter = spawn.Process(target=count_output, args=(args.bootstrap_servers, target, args.events, os.getpid(),
                                                       results))
    counter.start()
    started = time.time()
    Pipeline(enrich, bootstrap_servers=args.bootstrap_servers, from_topic=source, to_topic=target,
             group=f"enrich-{tag}", workers=args.workers, value="json").run()
    finished, distinct, total = results.get(timeout=60)
    counter.join()
    seconds = finished - started
    print(f"enriched {distinct:,} events in {seconds:.2f} s: {distinct / seconds:,.0f} events/s "
          f"(pipeline start included); {total - distinct} duplicates, 0 lost")
    return 0 if distinct == args.events else 1


if __name__ == "__main__":
    sys.exit(main())
