#!/usr/bin/env python3
"""pipeline_stages: the CPU per message of each stage of the Kafka pipeline, beside the floor of each.

Run it from a checkout as ``python tools/pipeline_stages.py --bootstrap-servers HOST:PORT`` (start a
broker with ``python tools/kafka_broker.py start --data-dir DIR``). It fills a fresh topic with
``--events`` JSON events of ~200 bytes (those of ``tools/kafka_bench.py``), then runs, each in a
fresh process that measures its own CPU (``resource.getrusage``: every thread, librdkafka's too):

- ``source``: ``KafkaSource`` consuming the topic into folder A, until it has taken every event;
  floor: a ``consume(1000)`` loop reading each message's value, key, headers, timestamp, topic,
  partition and offset into a tuple, one commit at the end;
- ``worker``: ``Worker`` draining folder A into folder B with the ``trivial`` transform (parse, add a
  field, encode); floor: ``Dequeuer.get_many(1000)`` + the same function + ``Enqueuer.put_many``,
  one flush at the end. The function's own CPU is measured apart and reported;
- ``sink``: ``KafkaSink`` draining folder B to a fresh topic; floor: a produce loop of the items
  already in memory, with one shared on_delivery, one flush at the end.

The floors get copies of the stage's input folder, so both sides read the same batches. With
``--profile DIR`` each pipeline stage also runs under cProfile (a second time, not the timed run)
and its top functions are printed; the stats files are kept in DIR.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
sys.path.insert(0, str(TOOLS))
sys.path.insert(0, str(ROOT))

import kafka_bench  # noqa: E402  (the events, the transform, topic helpers)
from turbo_queue import Dequeuer, Enqueuer  # noqa: E402

STAGES = ("source", "worker", "sink")


def cpu() -> float:
    """CPU seconds of this process so far, user + system, every thread."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _function(message: Any) -> Any:
    return message._replace(value=kafka_bench.trivial(message.value))


def _until(done: Callable[[], bool], stop: Callable[[], None], timeout: float) -> threading.Thread:
    """A thread that calls ``stop()`` once ``done()`` holds (or after ``timeout`` seconds)."""
    def watch() -> None:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            time.sleep(0.02)
        stop()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _timed(run: Callable[[], None], profile: Optional[str]) -> Dict[str, float]:
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
    begun_cpu, begun = cpu(), time.monotonic()
    run()
    spent_cpu, spent = cpu() - begun_cpu, time.monotonic() - begun
    if profile:
        profiler.disable()
        profiler.dump_stats(profile)
    return {"cpu": spent_cpu, "wall": spent}


def stage(args: argparse.Namespace) -> Dict[str, Any]:
    """One stage or floor, in this (fresh) process."""
    events, kind = args.events, args.stage
    if kind == "source":
        from turbo_queue.kafka import KafkaSource

        source = KafkaSource(args.into, bootstrap_servers=args.bootstrap_servers, topics=args.topic,
                             group=args.group, commit_interval=1.0)
        _until(lambda: source.counts["messages_in"] >= events, source.stop, args.timeout)
        return _timed(source.run, args.profile)
    if kind == "source-floor":
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": args.bootstrap_servers, "group.id": args.group,
                             "auto.offset.reset": "earliest", "enable.auto.commit": False,
                             "enable.auto.offset.store": False})
        consumer.subscribe([args.topic])

        def floor_source() -> None:
            got: List[Any] = []
            last: Dict[Any, int] = {}
            deadline = time.monotonic() + args.timeout
            while len(got) < events and time.monotonic() < deadline:
                for m in consumer.consume(1000, 0.2):
                    if m.error() is None:
                        got.append((m.value(), m.key(), m.headers(), m.timestamp()[1], m.topic(), m.partition(),
                                    m.offset()))
                        last[(m.topic(), m.partition())] = m.offset() + 1
            consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in last.items()], asynchronous=False)
            consumer.close()

        return _timed(floor_source, None)
    if kind == "worker":
        from turbo_queue.kafka import Worker

        worker = Worker(args.from_, args.into, _function)
        _until(lambda: worker.counts["messages_in"] >= events, worker.stop, args.timeout)
        result = _timed(worker.run, args.profile)
    elif kind == "worker-floor":
        def floor_worker() -> None:
            dequeuer, enqueuer = Dequeuer(args.from_), Enqueuer(args.into)
            taken = 0
            while taken < events:
                messages = dequeuer.get_many(1000, timeout=5)
                enqueuer.put_many([_function(m) for m in messages])
                taken += len(messages)
            enqueuer.close()
            dequeuer.close()

        result = _timed(floor_worker, None)
    else:
        result = {}
    if kind.startswith("worker"):
        from turbo_queue.kafka import Message

        sample = [Message(kafka_bench.make_event(i), str(i).encode(), None, 0, "t", 0, i) for i in range(1000)]
        begun = cpu()
        for _ in range(max(1, events // len(sample))):
            for message in sample:
                _function(message)
        result["function"] = cpu() - begun
        return result
    if kind == "sink":
        from turbo_queue.kafka import KafkaSink

        sink = KafkaSink(args.from_, bootstrap_servers=args.bootstrap_servers, topic=args.topic)
        _until(lambda: sink.counts["acks"] > 0 and sink.counts["delivered"] >= events, sink.stop, args.timeout)
        return _timed(sink.run, args.profile)
    if kind == "sink-floor":
        from confluent_kafka import Producer

        dequeuer = Dequeuer(args.from_)
        items: List[Any] = []
        while len(items) < events:
            items.extend(dequeuer.get_many(10_000, timeout=5))
        dequeuer.close()
        producer = Producer({"bootstrap.servers": args.bootstrap_servers, "acks": "all", "enable.idempotence": True,
                             "linger.ms": 5})
        delivered = [0]

        def report(error: Any, _record: Any) -> None:
            delivered[0] += 1

        def floor_sink() -> None:
            for item in items:
                while True:
                    try:
                        producer.produce(args.topic, item.value, item.key, headers=item.headers,
                                         timestamp=item.timestamp or 0, on_delivery=report)
                        break
                    except BufferError:
                        producer.poll(0.05)
                producer.poll(0)
            producer.flush(60)

        return _timed(floor_sink, None)
    raise ValueError(f"unknown stage {kind!r}")


def _child(argv: List[str]) -> Dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "_stage", *argv], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"stage {argv[1]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> int:
    bootstrap, events = args.bootstrap_servers, args.events
    tag = uuid.uuid4().hex[:8]
    topic_in, topic_out, topic_floor = f"stages-in-{tag}", f"stages-out-{tag}", f"stages-floor-{tag}"
    kafka_bench.make_topics(bootstrap, {topic_in: args.partitions, topic_out: args.partitions,
                                        topic_floor: args.partitions})
    kafka_bench.fill(bootstrap, topic_in, events)
    work = Path(tempfile.mkdtemp(prefix="pipeline-stages-"))
    a, b = work / "a", work / "b"
    load = os.getloadavg()
    print(f"# pipeline_stages: {events:,} events, {args.partitions} partition(s), {os.cpu_count()} cores, "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    rows: List[Dict[str, Any]] = []
    common = ["--bootstrap-servers", bootstrap, "--events", str(events), "--timeout", str(args.timeout)]

    def row(name: str, result: Dict[str, Any], floor: Dict[str, Any]) -> None:
        us = 1e6 * result["cpu"] / events
        floor_us = 1e6 * floor["cpu"] / events
        extra = ""
        if "function" in result:
            fn = 1e6 * result["function"] / events
            extra = f"  (function {fn:.1f}; beyond it: stage {us - fn:.1f}, floor {floor_us - fn:.1f})"
        print(f"{name:7} {us:7.1f} us/msg  floor {floor_us:6.1f} us/msg  wall {result['wall']:5.2f} s{extra}",
              flush=True)
        rows.append({"stage": name, "us": us, "floor_us": floor_us, **{k: v for k, v in result.items()}})

    try:
        if "source" in args.stages or not a.exists():
            res = _child(["--stage", "source", "--topic", topic_in, "--group", f"g-{tag}-s", "--into", str(a),
                          *common])
            floor = _child(["--stage", "source-floor", "--topic", topic_in, "--group", f"g-{tag}-f", *common])
            if "source" in args.stages:
                row("source", res, floor)
        if "worker" in args.stages or "sink" in args.stages:
            shutil.copytree(a, work / "a-floor")
            shutil.copytree(a, work / "a-profile")
            res = _child(["--stage", "worker", "--from", str(a), "--into", str(b), *common])
            floor = _child(["--stage", "worker-floor", "--from", str(work / "a-floor"), "--into",
                            str(work / "b-floor"), *common])
            if "worker" in args.stages:
                row("worker", res, floor)
        if "sink" in args.stages:
            shutil.copytree(b, work / "b-floor2")
            shutil.copytree(b, work / "b-profile")
            res = _child(["--stage", "sink", "--from", str(b), "--topic", topic_out, *common])
            floor = _child(["--stage", "sink-floor", "--from", str(work / "b-floor2"), "--topic", topic_floor,
                            *common])
            row("sink", res, floor)
        if args.profile:
            os.makedirs(args.profile, exist_ok=True)
            for name in args.stages:
                path = os.path.join(args.profile, f"{name}.prof")
                extra = {"source": ["--topic", topic_in, "--group", f"g-{tag}-p", "--into", str(work / "a-p")],
                         "worker": ["--from", str(work / "a-profile"), "--into", str(work / "b-p")],
                         "sink": ["--from", str(work / "b-profile"), "--topic", topic_floor]}[name]
                _child(["--stage", name, "--profile", path, *extra, *common])
                print(f"\n# cProfile of {name} (top {args.top} by own time; {path})")
                pstats.Stats(path).sort_stats("tottime").print_stats(args.top)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        kafka_bench.delete_topics(bootstrap, [topic_in, topic_out, topic_floor])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python tools/pipeline_stages.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap-servers", required=True, metavar="HOST:PORT", help="the broker to use")
    parser.add_argument("--events", type=int, default=100_000, help="events (default 100,000)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the topics (default 4)")
    parser.add_argument("--stages", type=lambda s: [x for x in s.split(",") if x], default=list(STAGES),
                        help="some of source,worker,sink (default all; the later ones run the earlier to get input)")
    parser.add_argument("--profile", default="", metavar="DIR", help="also cProfile each stage, stats into DIR")
    parser.add_argument("--top", type=int, default=25, help="functions to print per profile (default 25)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a stage may take (default 120)")
    parser.add_argument("--json", default="", help="write the rows as JSON here")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_stage":
        inner = argparse.ArgumentParser()
        for flag in ("--stage", "--bootstrap-servers", "--topic", "--group", "--into", "--from", "--profile"):
            inner.add_argument(flag, dest=flag[2:].replace("-", "_").replace("from", "from_"))
        inner.add_argument("--events", type=int)
        inner.add_argument("--timeout", type=float)
        print(json.dumps(stage(inner.parse_args(argv[1:]))))
        return 0
    args = build_parser().parse_args(argv)
    unknown = set(args.stages) - set(STAGES)
    if unknown or args.events < 1:
        print(f"pipeline_stages: --stages takes {','.join(STAGES)}; --events must be positive", file=sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
