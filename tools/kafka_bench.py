#!/usr/bin/env python3
"""kafka_bench: Kafka -> transform -> Kafka, turbo_queue's pipeline against what users write without it.

Run it from a checkout as ``python tools/kafka_bench.py`` (``--help`` for its flags; it starts a
broker of its own with ``tools/kafka_broker.py`` unless ``--bootstrap-servers`` names one). Each
row moves the same pre-filled input topic (200,000 JSON events of ~200 bytes, each with a unique
id) through a transform into a fresh output topic, with a fresh consumer group:

- ``turbo_queue``: ``turbo_queue.kafka.Pipeline(...).run()`` in a child process (what
  ``turbo-queue pipeline`` runs): 1 source, N workers, 1 sink;
- ``plain``: N processes, each a confluent-kafka Consumer in one group plus a Producer, at least
  once: ``consume(500)``, produce the outputs, wait for their delivery, then commit;
- ``quix``: Quix Streams 3.28.1, one Application per process in one group, at least once (its own
  virtualenv, made on first use under ``~/.cache/turbo_queue/quix-venv``).

The transforms, the same function for every contender: ``trivial`` (parse, add a field, encode)
and ``heavy`` (the same plus a stretched hash calibrated to ``--cpu-us`` of CPU per message).
Each row reports messages/s from the first input consumed to the last output appended (the
output topics use LogAppendTime), the CPU of all the contender's processes per message (the
broker excluded), the peak of their summed resident memory (sampled every 0.2 s), and the lost
and duplicated ids, counted by reading the whole output topic after the contender stopped. Each
row runs in a fresh runner process, and the contenders take turns (A, B, C, then A, B, C again
with ``--rounds``), so machine noise hits all alike; the median row of the rounds is reported.
Needs the ``kafka`` and ``bench`` extras (matplotlib for the chart), Java for the broker, and pip
access for the Quix Streams virtualenv.
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import orjson

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
EVENTS = 200_000
#: Messages per consume() call and per commit of the plain pipeline.
PLAIN_BATCH = 500
QUIX_VERSION = "3.28.1"
QUIX_VENV = Path.home() / ".cache" / "turbo_queue" / "quix-venv"
CONTENDERS = ("turbo_queue", "plain", "quix")
LABELS = {"turbo_queue": "turbo_queue pipeline", "plain": "plain confluent-kafka", "quix": "Quix Streams"}
#: Seconds between two samples of the contender's memory and of the output topic's end offsets.
SAMPLE_EVERY = 0.2
#: The environment variable naming the folder where each process notes when it consumed its first input.
MARKS_ENV = "KAFKA_BENCH_MARKS"

# -- the events and the work: the same for every contender ----------------------------------------

_AGENTS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120 Safari/537.36",
           "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) Safari/17",
           "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121")
_URLS = ("/cart?item=%d", "/search?q=shoes&page=%d", "/item/%d", "/help/returns#%d", "/?ref=%d")


def make_event(i: int) -> bytes:
    """Event ``i`` as JSON (about 200 bytes), its id first."""
    return orjson.dumps({"id": i, "ts": 1_700_000_000_000 + i, "user": f"user-{i % 50_000:05d}",
                         "agent": _AGENTS[i % 3], "url": _URLS[i % 5] % (i % 1000),
                         "amount": f"{i % 100}.{i % 97:02d}", "country": ("DE", "FR", "US", "BR", "JP")[i % 5]})


def trivial(value: bytes, rounds: int = 0) -> bytes:
    """Parse the event, add a field, encode it again."""
    event = orjson.loads(value)
    event["seen"] = True
    return orjson.dumps(event)


def heavy(value: bytes, rounds: int) -> bytes:
    """Parse the event, add a pseudonym of its user (``rounds`` of PBKDF2-SHA256: real CPU work), encode it."""
    event = orjson.loads(value)
    event["pseudonym"] = hashlib.pbkdf2_hmac("sha256", event["user"].encode(), b"kafka-bench", rounds).hex()[:16]
    event["seen"] = True
    return orjson.dumps(event)


TRANSFORMS: Dict[str, Callable[[bytes, int], bytes]] = {"trivial": trivial, "heavy": heavy}


def cpu_per_call(transform: Callable[[bytes, int], bytes], rounds: int, calls: int) -> float:
    """CPU microseconds of one ``transform(event, rounds)`` call in this process, the best of 3 tries."""
    value = make_event(12_345)
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for _ in range(calls):
            transform(value, rounds)
        best = min(best, (time.process_time() - started) / calls * 1e6)
    return best


def calibrate(target_us: float) -> Tuple[int, float]:
    """The rounds that make ``heavy`` cost about ``target_us`` of CPU per call, and what it then measured (us).

    Measures the cost without the hash and the cost of each round, in this process (CPU time,
    so a busy machine changes it little). Raises ValueError for a target that is not positive.
    """
    if not target_us > 0:
        raise ValueError(f"the CPU per message must be a positive number of microseconds, got {target_us!r}")
    base = cpu_per_call(heavy, 1, 2000)
    per_round = (cpu_per_call(heavy, 2001, 100) - base) / 2000
    rounds = max(1, round((target_us - base) / per_round)) if per_round > 0 else 1
    calls = max(100, int(200_000 / target_us))
    measured = cpu_per_call(heavy, rounds, calls)
    if measured > base and rounds > 1:  # one correction: the cost of a round is not quite linear at first
        rounds = max(1, round(1 + (rounds - 1) * (target_us - base) / (measured - base)))
        measured = cpu_per_call(heavy, rounds, calls)
    return rounds, measured


def mark_first(folder: Optional[str]) -> None:
    """Note, once per process, when it consumed its first input (``first-<pid>`` in ``folder``)."""
    global _marked
    if _marked or not folder:
        return
    _marked = True
    with open(os.path.join(folder, f"first-{os.getpid()}"), "w") as out:
        out.write(repr(time.time()))


_marked = False


def first_consumed(folder: str) -> Optional[float]:
    """The earliest time noted by ``mark_first`` in ``folder``, or None."""
    times = [float(Path(folder, name).read_text()) for name in os.listdir(folder) if name.startswith("first-")]
    return min(times) if times else None


def count_ids(ids: Iterable[int], events: int) -> Tuple[int, int, int]:
    """``(lost, duplicated, unexpected)`` for ids that should be each of ``range(events)`` once.

    ``duplicated`` counts the copies beyond the first; ``unexpected`` the ids outside the range.
    """
    seen = bytearray(events)
    duplicated = unexpected = 0
    for i in ids:
        if not 0 <= i < events:
            unexpected += 1
        elif seen[i]:
            duplicated += 1
        else:
            seen[i] = 1
    return seen.count(0), duplicated, unexpected


# -- the contenders, each in its processes -------------------------------------------------------

def _turbo_function(transform: Callable[[bytes, int], bytes], rounds: int, message: Any) -> Any:
    return message._replace(value=transform(message.value, rounds))  # keeps the key, as the others do


def run_turbo(args: argparse.Namespace) -> int:
    """``turbo_queue.kafka.Pipeline`` with 1 source, ``args.workers`` workers and 1 sink, until SIGTERM."""
    from turbo_queue.kafka import Pipeline
    from turbo_queue.kafka import source as source_module

    # The only hook: note when the source took its first message (the children are forked, so they have it too).
    take = source_module.KafkaSource._take

    def noting_take(self: Any, messages: List[Any], ck: Any) -> None:
        if messages:
            mark_first(os.environ.get(MARKS_ENV))
        take(self, messages, ck)

    source_module.KafkaSource._take = noting_take  # type: ignore[method-assign]
    function = functools.partial(_turbo_function, TRANSFORMS[args.transform], args.rounds)
    return Pipeline(function, bootstrap_servers=args.bootstrap_servers, from_topic=args.source, to_topic=args.target,
                    group=args.group, workers=args.workers, sources=1, sinks=1, progress=False).run()


def run_plain(args: argparse.Namespace) -> int:
    """One process of the plain pipeline: consume(500), produce, wait for delivery, commit; until SIGTERM."""
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

    stopping = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    signal.signal(signal.SIGINT, lambda signum, frame: stopping.append(signum))
    transform, rounds, marks = TRANSFORMS[args.transform], args.rounds, os.environ.get(MARKS_ENV)
    consumer = Consumer({"bootstrap.servers": args.bootstrap_servers, "group.id": args.group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    producer = Producer({"bootstrap.servers": args.bootstrap_servers})
    failed: List[Any] = []

    def delivered(error: Any, record: Any) -> None:
        if error is not None:
            failed.append(error)

    consumer.subscribe([args.source])
    try:
        while not stopping:
            batch = consumer.consume(PLAIN_BATCH, 0.5)
            if not batch:
                continue
            mark_first(marks)
            offsets: Dict[Tuple[str, int], int] = {}
            for record in batch:
                if record.error() is not None:
                    raise KafkaException(record.error())
                out = transform(record.value(), rounds)
                while True:
                    try:
                        producer.produce(args.target, out, record.key(), on_delivery=delivered)
                        break
                    except BufferError:  # the producer's queue is full: let it deliver some
                        producer.poll(0.05)
                offsets[(record.topic(), record.partition())] = record.offset() + 1
            producer.flush()
            if failed:
                raise KafkaException(failed[0])
            try:
                consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                asynchronous=False)
            except KafkaException as exc:  # a rebalance meanwhile: the batch comes again (at least once)
                print(f"plain: commit failed: {exc}", file=sys.stderr)
    finally:
        consumer.close()
    return 0


def run_quix(args: argparse.Namespace) -> int:
    """One Quix Streams Application (in its own virtualenv), at least once, until SIGTERM."""
    from quixstreams import Application

    transform, rounds, marks = TRANSFORMS[args.transform], args.rounds, os.environ.get(MARKS_ENV)

    def work(value: bytes) -> bytes:
        mark_first(marks)
        return transform(value, rounds)

    app = Application(broker_address=args.bootstrap_servers, consumer_group=args.group, auto_offset_reset="earliest",
                      processing_guarantee="at-least-once", state_dir=args.state_dir, loglevel="WARNING",
                      auto_create_topics=False)
    source = app.topic(args.source, value_deserializer="bytes", key_deserializer="bytes")
    target = app.topic(args.target, value_serializer="bytes", key_serializer="bytes")
    app.dataframe(source).apply(work).to_topic(target)
    app.run(collect=False)
    return 0


def quix_python(venv: Path = QUIX_VENV) -> str:
    """The Python of a virtualenv with Quix Streams 3.28.1, made on first use (it pins its own confluent-kafka).

    Raises RuntimeError when pip cannot install it.
    """
    python = venv / "bin" / "python"
    done = venv / ".complete"
    if done.exists() and done.read_text().strip() == QUIX_VERSION:
        return str(python)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / ".quix-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two benchmarks at once: one makes it, the other waits
        if done.exists() and done.read_text().strip() == QUIX_VERSION:
            return str(python)
        print(f"# making {venv} with quixstreams=={QUIX_VERSION} (once)", file=sys.stderr, flush=True)
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        result = subprocess.run([str(python), "-m", "pip", "install", "-q", f"quixstreams=={QUIX_VERSION}", "orjson"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"pip could not install quixstreams=={QUIX_VERSION} into {venv}:\n{result.stdout[-3000:]}")
        done.write_text(QUIX_VERSION + "\n")
    return str(python)


# -- one row, in a fresh runner process ----------------------------------------------------------

def _descendants(roots: Sequence[int]) -> List[int]:
    """The processes of ``roots`` and all their descendants that are alive (by /proc/<pid>/task/*/children)."""
    found: List[int] = []
    todo = list(roots)
    while todo:
        pid = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        found.append(pid)
        for task in tasks:
            try:
                todo.extend(int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split())
            except OSError:
                pass
    return found


def memory(pids: Iterable[int]) -> Tuple[int, int]:
    """``(rss, pss)`` in bytes, summed over ``pids`` (processes that are gone count 0)."""
    rss = pss = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for pid in pids:
        try:
            rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
                    break
        except (OSError, IndexError, ValueError):  # it ended between the listing and the reading
            pass
    return rss, pss


def process_cpu(pid: int) -> Optional[float]:
    """User + system CPU seconds of a running process, or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_topics(bootstrap: str, topics: Dict[str, int], config: Optional[Dict[str, str]] = None) -> None:
    """Create ``topics`` (name: partitions) and wait until the broker lists them."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, count, 1, config=dict(config or {})) for name, count in topics.items()])
    for future in futures.values():
        future.result(30)
    deadline = time.monotonic() + 30

    def ready() -> bool:  # listed, and each partition with a leader
        listed = admin.list_topics(timeout=10).topics
        return all(name in listed and listed[name].error is None and len(listed[name].partitions) == count
                   and all(p.leader >= 0 for p in listed[name].partitions.values())
                   for name, count in topics.items())

    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the topics {', '.join(topics)} did not appear within 30 s")
        time.sleep(0.1)


def delete_topics(bootstrap: str, topics: Sequence[str]) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept until the futures are done
    for future in admin.delete_topics(list(topics)).values():
        try:
            future.result(30)
        except Exception as exc:  # a topic left behind only takes disk space in the benchmark's broker
            print(f"# could not delete a topic: {exc}", file=sys.stderr)


def fill(bootstrap: str, topic: str, events: int) -> None:
    """Produce events ``0 .. events-1`` to ``topic``, keyed by id (so they spread over the partitions)."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(events):
        while True:
            try:
                producer.produce(topic, make_event(i), str(i).encode())
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120):
        raise RuntimeError(f"the broker did not take all {events:,} events within 120 s")


def read_output(bootstrap: str, topic: str, partitions: int, events: int) -> Dict[str, Any]:
    """Read ``topic`` whole: lost/duplicated/unexpected ids, messages, and the last append time (s)."""
    from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"kafka-bench-read-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30, cached=False)[1]
                for p in range(partitions)}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        ids: List[int] = []
        last_ms = 0
        done = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + 300
        while len(done) < partitions and time.monotonic() < deadline:
            for record in consumer.consume(10_000, 1.0):
                if record.error() is not None:
                    if record.error().code() == KafkaError._PARTITION_EOF:
                        done.add(record.partition())
                        continue
                    raise RuntimeError(f"reading {topic}: {record.error()}")
                if record.offset() >= ends[record.partition()]:
                    done.add(record.partition())
                    continue
                ids.append(orjson.loads(record.value())["id"])
                kind, stamp = record.timestamp()
                if kind != TIMESTAMP_NOT_AVAILABLE:
                    last_ms = max(last_ms, stamp)
                if record.offset() == ends[record.partition()] - 1:
                    done.add(record.partition())
        if len(done) < partitions:
            raise RuntimeError(f"could not read {topic} to its end within 300 s")
    finally:
        consumer.close()
    lost, duplicated, unexpected = count_ids(ids, events)
    return {"messages": len(ids), "lost": lost, "duplicated": duplicated, "unexpected": unexpected,
            "last_delivered": last_ms / 1000}


def contender_commands(spec: Dict[str, Any], group: str, target: str, work: str) -> List[List[str]]:
    """The processes to start for one row: one command each."""
    me = os.path.abspath(__file__)
    common = ["--bootstrap-servers", spec["bootstrap"], "--source", spec["source"], "--target", target,
              "--group", group, "--transform", spec["transform"], "--rounds", str(spec["rounds"])]
    if spec["contender"] == "turbo_queue":
        return [[sys.executable, me, "_turbo", *common, "--workers", str(spec["workers"])]]
    if spec["contender"] == "plain":
        return [[sys.executable, me, "_plain", *common] for _ in range(spec["workers"])]
    if spec["contender"] == "quix":
        return [[spec["quix_python"], me, "_quix", *common, "--state-dir", os.path.join(work, f"state-{i}")]
                for i in range(spec["workers"])]
    raise ValueError(f"unknown contender {spec['contender']!r}; known: {', '.join(CONTENDERS)}")


def run_row(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Run one contender over the input topic into a fresh output topic; its row of figures.

    Runs in a runner process of its own, whose only children are the contender's processes, so
    that ``RUSAGE_CHILDREN`` is their CPU. Raises RuntimeError when a process of the contender
    fails, or when the output is not complete within ``spec["timeout"]`` seconds.
    """
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    tag = uuid.uuid4().hex[:8]
    target, group = f"kafka-bench-out-{tag}", f"kafka-bench-{spec['contender']}-{tag}"
    bootstrap, partitions, events = spec["bootstrap"], spec["partitions"], spec["events"]
    make_topics(bootstrap, {target: partitions}, {"message.timestamp.type": "LogAppendTime"})
    work = tempfile.mkdtemp(prefix="kafka-bench-")
    watcher = Consumer({"bootstrap.servers": bootstrap, "group.id": f"kafka-bench-watch-{tag}"})  # end offsets only
    ends = [TopicPartition(target, p) for p in range(partitions)]
    broker_before = process_cpu(spec["broker_pid"]) if spec.get("broker_pid") else None
    env = {**os.environ, MARKS_ENV: work, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    processes: List[subprocess.Popen] = []
    logs = []
    peak_rss = peak_pss = 0
    started = time.monotonic()
    stopped = False
    try:
        for i, command in enumerate(contender_commands(spec, group, target, work)):
            log = open(os.path.join(work, f"process-{i}.log"), "w")
            logs.append(log)
            processes.append(subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                              env=env, cwd=work))
        delivered = 0
        start_cpu: Optional[float] = None  # the CPU the processes had used when the first input came: their start
        while True:
            tree = _descendants([p.pid for p in processes])
            rss, pss = memory(tree)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            if start_cpu is None and any(name.startswith("first-") for name in os.listdir(work)):
                start_cpu = sum(process_cpu(pid) or 0.0 for pid in tree)
            try:
                delivered = sum(watcher.get_watermark_offsets(tp, timeout=10, cached=False)[1] for tp in ends)
            except KafkaException as exc:  # a new topic's leader not known yet (NOT_LEADER_FOR_PARTITION): next time
                print(f"kafka_bench: end offsets of {target}: {exc}", file=sys.stderr)
            if delivered >= events:
                break
            dead = [p for p in processes if p.poll() is not None]
            if dead:
                raise RuntimeError(f"a process of {spec['contender']} exited with {dead[0].returncode} after "
                                   f"{delivered:,} outputs:\n{_log_tail(work)}")
            if time.monotonic() - started > spec["timeout"]:
                raise RuntimeError(f"{spec['contender']} delivered {delivered:,} of {events:,} within "
                                   f"{spec['timeout']:g} s:\n{_log_tail(work)}")
            time.sleep(SAMPLE_EVERY)
        # Everything is out: stop it as an operator would (SIGTERM), and keep sampling meanwhile.
        for process in processes:
            process.send_signal(signal.SIGTERM)
        stop_deadline = time.monotonic() + 60
        while any(p.poll() is None for p in processes) and time.monotonic() < stop_deadline:
            rss, pss = memory(_descendants([p.pid for p in processes if p.poll() is None]))
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            time.sleep(SAMPLE_EVERY)
        killed = [p for p in processes if p.poll() is None]
        for process in killed:
            process.kill()
        codes = [p.wait() for p in processes]
        stopped = True
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for log in logs:
            log.close()
        watcher.close()
        if not stopped:  # the row failed: leave nothing behind
            shutil.rmtree(work, ignore_errors=True)
            delete_topics(bootstrap, [target])
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    broker_after = process_cpu(spec["broker_pid"]) if spec.get("broker_pid") else None
    try:
        output = read_output(bootstrap, target, partitions, events)
        first = first_consumed(work)
        log_tail = _log_tail(work) if killed or any(codes) else ""
    finally:
        shutil.rmtree(work, ignore_errors=True)
        delete_topics(bootstrap, [target])
    if first is None:
        raise RuntimeError(f"{spec['contender']} noted no first input")
    seconds = max(output["last_delivered"] - first, 1e-3)
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "contender": spec["contender"], "partitions": partitions, "transform": spec["transform"],
        "workers": spec["workers"], "events": events, "seconds": seconds, "msgs_per_s": events / seconds,
        "cpu_s": cpu, "cpu_us_per_msg": cpu / events * 1e6, "start_cpu_s": start_cpu,
        "row_seconds": time.monotonic() - started, "peak_rss_mb": peak_rss / 2**20,
        "peak_pss_mb": peak_pss / 2**20, "processes": len(processes), "exit_codes": codes,
        "killed_at_stop": len(killed), "stop_log": log_tail[-2000:],
        "broker_cpu_s": None if broker_before is None or broker_after is None else broker_after - broker_before,
        **{k: output[k] for k in ("messages", "lost", "duplicated", "unexpected")},
    }


def _log_tail(work: str, lines: int = 15) -> str:
    parts = []
    for name in sorted(os.listdir(work)):
        if name.endswith(".log"):
            text = Path(work, name).read_text(errors="replace").splitlines()[-lines:]
            if text:
                parts.append(f"--- {name}\n" + "\n".join(text))
    return "\n".join(parts) or "(the processes printed nothing)"


def run_row_in_fresh_process(spec: Dict[str, Any]) -> Dict[str, Any]:
    """``run_row(spec)`` in a runner process (a session of its own: a timeout kills all of it)."""
    runner = subprocess.Popen([sys.executable, os.path.abspath(__file__), "_row", json.dumps(spec)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = runner.communicate(timeout=spec["timeout"] + 180)
    except BaseException:  # the time ran out, or Ctrl-C
        os.killpg(runner.pid, signal.SIGKILL)
        runner.communicate()
        raise
    if runner.returncode != 0:
        raise RuntimeError(err.strip()[-4000:] or f"the runner exited with {runner.returncode}")
    return dict(json.loads(out.strip().splitlines()[-1]))


# -- the report ------------------------------------------------------------------------------------

def medians(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per (partitions, transform, workers, contender): the row with the median messages/s."""
    groups: Dict[Tuple[Any, ...], List[Dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["partitions"], row["transform"], row["workers"], row["contender"]), []).append(row)
    order = {name: i for i, name in enumerate(CONTENDERS)}
    kept = []
    for key in sorted(groups, key=lambda k: (k[0], k[1] != "trivial", k[2], order.get(k[3], 9))):
        same = sorted(groups[key], key=lambda r: r["msgs_per_s"])
        kept.append({**same[(len(same) - 1) // 2], "rounds": len(same)})
    return kept


def table(rows: List[Dict[str, Any]]) -> str:
    lines = ["| contender | partitions | transform | N | msgs/s | CPU us/msg | memory MB | lost | dup |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {LABELS.get(r['contender'], r['contender'])} | {r['partitions']} | {r['transform']} "
                     f"| {r['workers']} | {r['msgs_per_s']:,.0f} | {r['cpu_us_per_msg']:.1f} | {r['peak_rss_mb']:.0f} "
                     f"| {r['lost']} | {r['duplicated']} |")
    return "\n".join(lines)


def _best(rows: List[Dict[str, Any]], contender: str, partitions: int, transform: str) -> Optional[Dict[str, Any]]:
    same = [r for r in rows if (r["contender"], r["partitions"], r["transform"]) == (contender, partitions, transform)]
    return max(same, key=lambda r: r["msgs_per_s"]) if same else None


def _at(rows: List[Dict[str, Any]], contender: str, partitions: int, transform: str, workers: int
        ) -> Optional[Dict[str, Any]]:
    for r in rows:
        if (r["contender"], r["partitions"], r["transform"], r["workers"]) == (contender, partitions, transform, workers):
            return r
    return None


def _rate(row: Dict[str, Any]) -> str:
    return f"{row['msgs_per_s']:,.0f}/s (N={row['workers']})"


def goals(kept: List[Dict[str, Any]], every_row: List[Dict[str, Any]]) -> List[Tuple[str, Optional[bool], str]]:
    """The issue's goals: ``(goal, met, figures)``; met is None when the rows to decide it were not run."""
    out: List[Tuple[str, Optional[bool], str]] = []
    turbo, plain, quix = (_best(kept, c, 1, "heavy") for c in CONTENDERS)
    goal = "CPU-heavy, 1 partition: the pipeline >= 1.6x the plain pipeline and ahead of Quix Streams"
    if turbo and plain:
        ratio = turbo["msgs_per_s"] / plain["msgs_per_s"]
        met = ratio >= 1.6 and (quix is None or turbo["msgs_per_s"] > quix["msgs_per_s"])
        text = f"best of each: turbo_queue {_rate(turbo)}, plain {_rate(plain)}: {ratio:.2f}x"
        text += f"; Quix Streams {_rate(quix)}" if quix else "; Quix Streams not run"
        out.append((goal, met if quix else None if ratio >= 1.6 else False, text))
    else:
        out.append((goal, None, "not run"))
    goal = "CPU-heavy, 4 partitions: the pipeline >= 1.0x the plain pipeline at the same N"
    pairs = [(t, _at(kept, "plain", 4, "heavy", t["workers"])) for t in kept
             if (t["contender"], t["partitions"], t["transform"]) == ("turbo_queue", 4, "heavy")]
    pairs = [(t, p) for t, p in pairs if p]
    if pairs:
        ratios = [(t["workers"], t["msgs_per_s"] / p["msgs_per_s"]) for t, p in pairs]
        out.append((goal, all(r >= 1.0 for _, r in ratios),
                    "; ".join(f"N={n}: {t['msgs_per_s']:,.0f} vs {p['msgs_per_s']:,.0f}/s, {r:.2f}x"
                              for (n, r), (t, p) in zip(ratios, pairs))))
    else:
        out.append((goal, None, "not run"))
    goal = "trivial transform: the pipeline >= 0.8x the plain pipeline's best (per partition count)"
    parts, verdicts = [], []
    for partitions in sorted({r["partitions"] for r in kept}):
        t, p = _best(kept, "turbo_queue", partitions, "trivial"), _best(kept, "plain", partitions, "trivial")
        if t and p:
            ratio = t["msgs_per_s"] / p["msgs_per_s"]
            verdicts.append(ratio >= 0.8)
            parts.append(f"{partitions} partition(s): turbo_queue {_rate(t)}, plain {_rate(p)}: {ratio:.2f}x")
    out.append((goal, all(verdicts) if verdicts else None, "; ".join(parts) or "not run"))
    lost = [r for r in every_row if r["lost"] or r["unexpected"]]
    out.append(("lost 0 in every row", not lost,
                f"{len(every_row)} rows, lost in {len(lost)}" + (": " + ", ".join(
                    f"{r['contender']} {r['partitions']}p {r['transform']} N={r['workers']}: {r['lost']}"
                    for r in lost) if lost else "")))
    goal = "N = 4: the pipeline's total memory below the plain pipeline's"
    parts, verdicts = [], []
    for t in kept:
        if (t["contender"], t["workers"]) != ("turbo_queue", 4):
            continue
        p = _at(kept, "plain", t["partitions"], t["transform"], 4)
        if p:
            verdicts.append(t["peak_rss_mb"] < p["peak_rss_mb"])
            parts.append(f"{t['partitions']}p {t['transform']}: {t['peak_rss_mb']:.0f} vs {p['peak_rss_mb']:.0f} MB RSS "
                         f"(PSS {t['peak_pss_mb']:.0f} vs {p['peak_pss_mb']:.0f} MB)")
    out.append((goal, all(verdicts) if verdicts else None, "; ".join(parts) or "not run"))
    return out


def chart(rows: List[Dict[str, Any]], path: str, title: str) -> Optional[str]:
    """Messages/s by N, one panel per (transform, partitions), a bar per contender; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels = sorted({(r["transform"] != "trivial", r["transform"], r["partitions"]) for r in rows})
    names = [c for c in CONTENDERS if any(r["contender"] == c for r in rows)]
    columns = sorted({p for _, _, p in panels})
    transforms = list(dict.fromkeys(t for _, t, _ in panels))
    fig, axes = plt.subplots(len(transforms), len(columns), figsize=(5 * len(columns), 3.6 * len(transforms)),
                             squeeze=False)
    width = 0.8 / max(len(names), 1)
    for _, transform, partitions in panels:
        ax = axes[transforms.index(transform)][columns.index(partitions)]
        sweep = sorted({r["workers"] for r in rows if (r["transform"], r["partitions"]) == (transform, partitions)})
        for k, name in enumerate(names):
            values = [next((r["msgs_per_s"] for r in rows if (r["contender"], r["transform"], r["partitions"],
                                                             r["workers"]) == (name, transform, partitions, n)), 0)
                      for n in sweep]
            ax.bar([i + k * width for i in range(len(sweep))], values, width, label=LABELS[name])
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(sweep))])
        ax.set_xticklabels([f"N = {n}" for n in sweep])
        ax.set_title(f"{transform} transform, {partitions} partition{'s' if partitions > 1 else ''}", fontsize=10)
        ax.set_ylabel("messages/s")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(names), frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -- the command line --------------------------------------------------------------------------------

def _numbers(text: str) -> List[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def _names(known: Sequence[str]) -> Callable[[str], List[str]]:
    def parse(text: str) -> List[str]:
        values = [x.strip() for x in text.split(",") if x.strip()]
        wrong = [v for v in values if v not in known]
        if not values or wrong:
            raise argparse.ArgumentTypeError(f"expected some of {', '.join(known)}, got {text!r}")
        return values
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python tools/kafka_bench.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap-servers", metavar="HOST:PORT",
                        help="a broker to use (default: start one with tools/kafka_broker.py, stopped at the end)")
    parser.add_argument("--events", type=int, default=EVENTS, help=f"events per row (default {EVENTS:,})")
    parser.add_argument("--partitions", type=_numbers, default=[1, 4], help="input topics' partitions (default 1,4)")
    parser.add_argument("--transforms", type=_names(list(TRANSFORMS)), default=list(TRANSFORMS),
                        help="trivial and/or heavy (default both)")
    parser.add_argument("--workers", type=_numbers, default=[2, 4],
                        help="values of N: the pipeline's workers, the others' processes (default 2,4, which "
                             "keeps a run on 2 cores near 15 minutes; --workers 1,2,4 takes about half as long again)")
    parser.add_argument("--contenders", type=_names(CONTENDERS), default=list(CONTENDERS),
                        help=f"some of {', '.join(CONTENDERS)} (default all)")
    parser.add_argument("--rounds", type=int, default=1, help="turns each row runs; the median is kept (default 1)")
    parser.add_argument("--cpu-us", type=float, default=100.0, help="CPU per message of the heavy transform (default 100)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a row may take (default 300)")
    parser.add_argument("--chart", default=str(ROOT / "docs" / "kafka_bench.png"),
                        help="PNG chart to write ('' for none; default docs/kafka_bench.png)")
    parser.add_argument("--json", default="", help="write every row and the medians as JSON here")
    parser.add_argument("--quix-venv", type=Path, default=QUIX_VENV, help=f"Quix Streams' virtualenv (default {QUIX_VENV})")
    return parser


def inner_parser() -> argparse.ArgumentParser:
    """The commands the benchmark runs in its own processes (not for people)."""
    parser = argparse.ArgumentParser(prog="python tools/kafka_bench.py")
    inner = parser.add_subparsers(dest="command", required=True)
    inner.add_parser("_row").add_argument("spec")
    for name in INNER[1:]:
        sub = inner.add_parser(name)
        for flag in ("--bootstrap-servers", "--source", "--target", "--group", "--transform"):
            sub.add_argument(flag, required=True)
        sub.add_argument("--rounds", type=int, default=0)
        sub.add_argument("--workers", type=int, default=1)
        sub.add_argument("--state-dir")
    return parser


INNER = ("_row", "_turbo", "_plain", "_quix")


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in INNER:
        inner = inner_parser().parse_args(argv)
        if inner.command == "_row":
            print(json.dumps(run_row(json.loads(inner.spec))))
            return 0
        return {"_turbo": run_turbo, "_plain": run_plain, "_quix": run_quix}[inner.command](inner)
    args = build_parser().parse_args(argv)
    if args.events < 1 or args.rounds < 1:
        print("kafka_bench: --events and --rounds must be positive", file=sys.stderr)
        return 2
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130


def run(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(TOOLS))
    import kafka_broker

    load_before = os.getloadavg()
    quix = quix_python(args.quix_venv) if "quix" in args.contenders else ""
    rounds, measured_us = calibrate(args.cpu_us) if "heavy" in args.transforms else (0, 0.0)
    broker = None
    data = ""
    bootstrap = args.bootstrap_servers
    if not bootstrap:
        data = tempfile.mkdtemp(prefix="kafka-bench-broker-")
        broker = kafka_broker.start(data)
        bootstrap = broker.bootstrap
    tag = uuid.uuid4().hex[:8]
    inputs = {p: f"kafka-bench-in-{tag}-{p}" for p in args.partitions}
    print(f"# kafka_bench: {args.events:,} events per row, partitions {args.partitions}, transforms "
          f"{args.transforms}, N in {args.workers}, contenders {args.contenders}, {args.rounds} round(s); "
          f"{os.cpu_count()} cores, load {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; "
          f"broker {bootstrap}", flush=True)
    if rounds:
        print(f"# heavy transform: {rounds} PBKDF2 rounds, {measured_us:.0f} us of CPU per message measured "
              f"(trivial: {cpu_per_call(trivial, 0, 20_000):.1f} us)", flush=True)
    rows: List[Dict[str, Any]] = []
    failures: List[str] = []
    try:
        make_topics(bootstrap, {name: p for p, name in inputs.items()})
        for partitions, name in inputs.items():
            begun = time.monotonic()
            fill(bootstrap, name, args.events)
            print(f"# filled {name} ({partitions} partition(s)) in {time.monotonic() - begun:.1f} s", flush=True)
        for partitions in args.partitions:
            for transform in args.transforms:
                for workers in args.workers:
                    for _ in range(args.rounds):
                        for contender in args.contenders:  # taking turns: noise hits every contender alike
                            spec = {"contender": contender, "bootstrap": bootstrap, "source": inputs[partitions],
                                    "partitions": partitions, "transform": transform, "workers": workers,
                                    "rounds": rounds if transform == "heavy" else 0, "events": args.events,
                                    "timeout": args.timeout, "quix_python": quix,
                                    "broker_pid": broker.pid if broker else None}
                            what = f"{contender} {partitions}p {transform} N={workers}"
                            try:
                                row = run_row_in_fresh_process(spec)
                            except RuntimeError as exc:
                                print(f"  {what}: FAILED: {exc}", file=sys.stderr, flush=True)
                                failures.append(what)
                                continue
                            rows.append(row)
                            broker_cpu = ("" if row["broker_cpu_s"] is None
                                          else f", broker {row['broker_cpu_s']:.1f} s CPU")
                            if row["start_cpu_s"] is not None:
                                broker_cpu += f", {row['start_cpu_s']:.1f} s CPU before the first input"
                            broker_cpu += f", row {row['row_seconds']:.0f} s"
                            print(f"  {what}: {row['msgs_per_s']:,.0f} msgs/s, {row['cpu_us_per_msg']:.1f} us/msg, "
                                  f"{row['peak_rss_mb']:.0f} MB (PSS {row['peak_pss_mb']:.0f}), lost {row['lost']}, "
                                  f"dup {row['duplicated']}{broker_cpu}", file=sys.stderr, flush=True)
    finally:
        if broker is not None:
            broker.stop()
            shutil.rmtree(data, ignore_errors=True)
        elif bootstrap:
            delete_topics(bootstrap, list(inputs.values()))
    kept = medians(rows)
    load_after = os.getloadavg()
    print()
    print(table(kept))
    print()
    for goal, met, figures in goals(kept, rows):
        print(f"- {goal}: {'met' if met else 'not met' if met is False else 'not decided'} ({figures})")
    print(f"\n# load before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    if failures:
        print(f"# failed: {', '.join(failures)}")
    if args.chart and kept:
        title = f"Kafka -> transform -> Kafka, {args.events:,} messages, {os.cpu_count()} cores (higher is better)"
        if chart(kept, args.chart, title):
            print(f"# chart: {args.chart}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "medians": kept, "heavy_rounds": rounds,
                                               "heavy_cpu_us": measured_us, "load_before": load_before,
                                               "load_after": load_after, "failures": failures}, indent=1))
    return 1 if failures or any(r["lost"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
