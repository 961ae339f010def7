"""The side-by-side benchmark: turbo_queue against multiprocessing.Queue and its peers.

Run it from a checkout as ``python tools/bench.py`` (``--help`` for its flags). Every row moves N realistic items
(a fresh dict each, ~130 bytes pickled) from P producer processes to C consumer processes, checks every
item on arrival, and reports items/s, CPU microseconds per item over all processes, the peak
memory of the largest process, and how many items were lost or duplicated. Each row runs in a
fresh runner process (so peak memory and CPU are its own), and the contenders take turns, so
machine noise hits all alike. faster-fifo, pyzmq and matplotlib come with the ``bench`` extra.
Kafka -> transform -> Kafka (the pipeline against plain confluent-kafka and Quix Streams): ``tools/kafka_bench.py``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import pickle
import queue as queue_module
import resource
import select
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from abc import ABC, abstractmethod
from typing import Any, Callable, Dict, List, Optional, Tuple

LIST = 100  # items per list (lists of 100) and per put_many/get_many
_POLL = 0.05


def make_item(i: int) -> Dict[str, Any]:
    """An event of ~130 bytes pickled, made of its own objects (pickling a list cannot share them)."""
    return {
        "id": i,
        "ts": time.time(),
        "user": f"user_{i % 50_000:05d}",
        "tags": ["alpha", f"tag{i % 17}", f"region-{i % 5}"],
        "text": f"event {i}: the quick brown fox jumps over the lazy dog, {i * 7 % 1000} times",
    }


# -- contenders: how to make a queue, put one/many and get one/many --------------------------

class Contender(ABC):
    """One way to move items. ``batched`` contenders move lists of LIST items per call."""

    name = ""
    batched = False
    on_disk = False  # runs in the --disk folder: fsync means nothing on tmpfs
    needs: Tuple[str, ...] = ()

    @abstractmethod
    def make(self, folder: str, consumers: int) -> Any:
        """The queue (or what producers and consumers need to reach each other)."""

    def producer_side(self, q: Any, index: int) -> Any:
        return q

    def consumer_side(self, q: Any, index: int) -> Any:
        return q

    def put(self, q: Any, payload: Any) -> None:
        q.put(payload)

    def get(self, q: Any) -> Any:
        return q.get(timeout=_POLL)

    def finish_producer(self, q: Any) -> None:
        """Make sure what this producer put is on its way before it reports done."""

    empty_errors: Tuple[type, ...] = (queue_module.Empty,)


class MpQueue(Contender):
    name = "multiprocessing.Queue"

    def make(self, folder, consumers):
        return multiprocessing.Queue()

    def finish_producer(self, q):
        q.close()
        q.join_thread()


class MpQueueLists(MpQueue):
    name = "multiprocessing.Queue, lists of 100"
    batched = True


class TurboQueue(Contender):
    name = "turbo_queue.Queue"
    durable = False

    def make(self, folder, consumers):
        import turbo_queue

        return turbo_queue.Queue(path=folder, durable=self.durable)

    def finish_producer(self, q):
        q.close()


class TurboQueueMany(TurboQueue):
    name = "turbo_queue.Queue, put_many/get_many"
    batched = True

    def put(self, q, payload):
        q.put_many(payload)

    def get(self, q):
        return q.get_many(LIST, timeout=_POLL)


class TurboQueueManyDurable(TurboQueueMany):
    name = "turbo_queue.Queue, put_many/get_many, durable (disk)"
    durable = True
    on_disk = True


class FasterFifo(Contender):
    name = "faster-fifo"
    needs = ("faster_fifo",)

    def make(self, folder, consumers):
        import faster_fifo

        return faster_fifo.Queue(max_size_bytes=64 * 1024 * 1024)

    def get(self, q):
        return q.get(timeout=_POLL)


class FasterFifoLists(FasterFifo):
    name = "faster-fifo, lists of 100"
    batched = True


class _ZmqProducer:
    """A producer's PUSH socket and the monitor that reports its connections to the consumers."""

    __slots__ = ("sock", "monitor", "consumers")

    def __init__(self, sock: Any, monitor: Any, consumers: int) -> None:
        self.sock, self.monitor, self.consumers = sock, monitor, consumers


def _zmq_await(monitor: Any, event: int, count: int) -> None:
    """Wait until ``monitor`` has reported ``event`` for ``count`` different endpoints."""
    from zmq.utils.monitor import recv_monitor_message

    endpoints = set()
    while len(endpoints) < count:
        message = recv_monitor_message(monitor)
        if message["event"] == event:
            endpoints.add(message["endpoint"])


class Zmq(Contender):
    """PUSH/PULL over ipc://: each consumer binds, every producer connects to all of them.

    A producer is connected to every consumer before the clock starts (a connect that comes before
    the bind is retried only after 100 ms), and keeps its socket open until every consumer has hung
    up (they do once all items have arrived). Closing it sooner loses items even with an infinite
    linger: a consumer whose pipe is at RCVHWM stops reading that connection, the hang-up marks the
    connection failed, and once the pipe drains libzmq drops it with the rest of the items still
    unread in the kernel.
    """

    name = "pyzmq PUSH/PULL"
    needs = ("zmq",)

    def make(self, folder, consumers):
        # Linux's abstract socket names: a path under a deep folder can pass the 107 bytes of a
        # socket address, and nothing is left on disk.
        tag = uuid.uuid4().hex[:12]
        return [f"ipc://@turbo_queue-bench-{tag}-{i}" for i in range(consumers)]

    def producer_side(self, addresses, index):
        import zmq

        sock = zmq.Context.instance().socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, 10_000)
        monitor = sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        for address in addresses:
            sock.connect(address)
        _zmq_await(monitor, zmq.EVENT_CONNECTED, len(addresses))
        return _ZmqProducer(sock, monitor, len(addresses))

    def consumer_side(self, addresses, index):
        import zmq

        sock = zmq.Context.instance().socket(zmq.PULL)
        sock.bind(addresses[index])
        return sock

    def put(self, side, payload):
        side.sock.send_pyobj(payload)

    def get(self, sock):
        if not sock.poll(int(_POLL * 1000)):
            raise queue_module.Empty
        return sock.recv_pyobj()

    def finish_producer(self, side):
        import zmq

        _zmq_await(side.monitor, zmq.EVENT_DISCONNECTED, side.consumers)
        zmq.Context.instance().destroy(linger=0)  # nothing is left in flight (the child exits with os._exit)


class ZmqLists(Zmq):
    name = "pyzmq PUSH/PULL, lists of 100"
    batched = True


CONTENDERS: Dict[str, Contender] = {
    c.name: c
    for c in (MpQueue(), MpQueueLists(), TurboQueue(), TurboQueueMany(), TurboQueueManyDurable(),
              FasterFifo(), FasterFifoLists(), Zmq(), ZmqLists())
}
SHORT = {
    "mp": "multiprocessing.Queue", "mp-lists": "multiprocessing.Queue, lists of 100",
    "turbo": "turbo_queue.Queue", "turbo-many": "turbo_queue.Queue, put_many/get_many",
    "turbo-durable": "turbo_queue.Queue, put_many/get_many, durable (disk)",
    "fifo": "faster-fifo", "fifo-lists": "faster-fifo, lists of 100",
    "zmq": "pyzmq PUSH/PULL", "zmq-lists": "pyzmq PUSH/PULL, lists of 100",
}


def available(contender: Contender) -> bool:
    for module in contender.needs:
        try:
            __import__(module)
        except ImportError:
            return False
    return True


# -- one run, inside a fresh runner process -----------------------------------------------------

def _spent(role: str) -> Tuple[str, float, float, Dict[str, List[float]]]:
    """This process's CPU seconds so far: its main thread's, and all its threads' (a forked child
    starts from zero); and what the --breakdown's timed functions used in it."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return role, time.thread_time(), usage.ru_utime + usage.ru_stime, _timed


# -- --breakdown: where a turbo_queue row's CPU goes, function by function ---------------------------

#: label of a timed call -> [calls, CPU seconds of the calling thread], in this process (a forked child
#: starts from its parent's, which has made no call).
_timed: Dict[str, List[float]] = {}


def _time_calls(owner: Any, attribute: str, label: str, outcome: Optional[Callable[[Any], str]] = None) -> None:
    """Replace ``owner.attribute`` by a wrapper that adds each call's thread CPU time to ``_timed[label]``
    (``label:<outcome(result)>``, and ``label:raised`` for an exception, when ``outcome`` is given)."""
    function = getattr(owner, attribute)

    def timed(*args: Any, **kwargs: Any) -> Any:
        key = label
        start = time.thread_time()
        try:
            result = function(*args, **kwargs)
            if outcome is not None:
                key = f"{label}:{outcome(result)}"
            return result
        except BaseException:
            if outcome is not None:
                key = f"{label}:raised"
            raise
        finally:
            entry = _timed.setdefault(key, [0, 0.0])
            entry[0] += 1
            entry[1] += time.thread_time() - start

    setattr(owner, attribute, timed)


def time_library_calls() -> None:
    """Time the library's calls that a process makes once, per batch file or per wake-up (times
    are inclusive: ``claim`` holds ``ready_in_order`` and ``take``)."""
    from turbo_queue import _counters, _folder, _watch, consumer, producer, queues

    for owner, attribute, label in (
        (queues.Queue, "_open_enqueuer", "start: Enqueuer"), (queues.Queue, "_open_dequeuer", "start: Dequeuer"),
        (_counters.Counters, "__init__", "start: counters file"), (_counters.Counters, "retire", "close: counters"),
        (queues.Queue, "close", "close: Queue.close"),
        (producer.Enqueuer, "put_many", "put_many"), (producer.Enqueuer, "_roll", "roll"),
        (consumer.Dequeuer, "get_many", "get_many"), (consumer.Dequeuer, "_read_chunk", "read a chunk"),
        (consumer.Dequeuer, "_claim", "claim: Dequeuer._claim"), (consumer.Dequeuer, "_finish_batch", "finish a batch"),
        (_watch.FolderEvents, "mark", "wake: mark (drain events)"), (_watch.FolderEvents, "wait", "wake: wait"),
        (_folder, "ready_in_order", "claim: list the folder"),
        (consumer, "recover", "claim: recover"), (consumer, "BatchReader", "claim: open the batch"),
    ):
        _time_calls(owner, attribute, label)
    _time_calls(_folder, "claim", "claim: try", _got)  # raised: Held (every ready_ file it tried was locked)
    _time_calls(_folder, "take", "claim: take", _got)


def _got(batch: Any) -> str:
    return "none" if batch is None else "got"


def _produce(contender: Contender, q: Any, index: int, start: int, stop: int, ready: Any, go: Any,
             spent: Any) -> None:
    side = contender.producer_side(q, index)
    ready.wait()
    go.wait()
    if contender.batched:
        for first in range(start, stop, LIST):
            contender.put(side, [make_item(i) for i in range(first, min(first + LIST, stop))])
    else:
        for i in range(start, stop):
            contender.put(side, make_item(i))
    contender.finish_producer(side)
    spent.put(_spent("producer"))


def _consume(contender: Contender, q: Any, index: int, total: int, received: Any, ready: Any, results: Any,
             spent: Any) -> None:
    side = contender.consumer_side(q, index)
    seen = bytearray(total)
    mine = unreported = 0
    last = 0.0
    ready.wait()
    get, batched = contender.get, contender.batched
    while True:
        try:
            payload = get(side)
        except contender.empty_errors:
            with received.get_lock():
                received.value += unreported
                unreported = 0
                if received.value >= total:
                    break
            continue
        last = time.monotonic()
        items = payload if batched else (payload,)
        for item in items:
            i = item["id"]
            if seen[i] < 255:
                seen[i] += 1
        mine += len(items)
        unreported += len(items)
        if unreported >= 1000:
            with received.get_lock():
                received.value += unreported
            unreported = 0
    results.put((index, last, mine, bytes(seen)))
    spent.put(_spent("consumer"))


def run_one(name: str, producers: int, consumers: int, total: int, folder: str) -> Dict[str, Any]:
    """Move ``total`` items with one contender; runs in a fresh runner process."""
    contender = CONTENDERS[name]
    ctx = multiprocessing.get_context("fork")
    q = contender.make(folder, consumers)
    received = ctx.Value("q", 0)
    ready = ctx.Barrier(producers + consumers + 1)
    go = ctx.Event()
    results, spent = ctx.SimpleQueue(), ctx.SimpleQueue()
    share = -(-total // producers)
    procs = [ctx.Process(target=_consume, args=(contender, q, i, total, received, ready, results, spent))
             for i in range(consumers)]
    procs += [ctx.Process(target=_produce, args=(contender, q, i, i * share, min(total, (i + 1) * share), ready, go,
                                                 spent))
              for i in range(producers)]
    for p in procs:
        p.start()
    ready.wait()
    started = time.monotonic()
    go.set()
    reports = [results.get() for _ in range(consumers)]
    cpu = dict.fromkeys(("producer_main", "producer_threads", "consumer_main", "consumer_threads"), 0.0)
    breakdown: Dict[str, Dict[str, List[float]]] = {"producer": {}, "consumer": {}}
    for _ in procs:
        role, main, whole, timed = spent.get()
        cpu[f"{role}_main"] += main
        cpu[f"{role}_threads"] += whole - main
        for label, (calls, seconds) in timed.items():
            entry = breakdown[role].setdefault(label, [0, 0.0])
            entry[0] += calls
            entry[1] += seconds
    for p in procs:
        p.join()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    # The rest of the children's CPU: forks, and what each process did after its work (its exit).
    cpu["outside"] = usage.ru_utime + usage.ru_stime - sum(cpu.values())
    finished = max(r[1] for r in reports)
    counts = bytearray(total)
    for _, _, _, seen in reports:
        for i, c in enumerate(seen):
            if c:
                counts[i] = min(255, counts[i] + c)
    lost = counts.count(0)
    duplicated = sum(c - 1 for c in counts if c > 1)
    elapsed = max(finished - started, 1e-9)
    return {
        "contender": name, "producers": producers, "consumers": consumers, "items": total,
        "items_per_s": total / elapsed, "seconds": elapsed,
        "cpu_us_per_item": (usage.ru_utime + usage.ru_stime) / total * 1e6,
        "peak_mb": usage.ru_maxrss / 1024, "lost": lost, "duplicated": duplicated, "cpu_s": cpu,
        **({"breakdown": breakdown} if any(breakdown.values()) else {}),
    }


def _runner(args: argparse.Namespace) -> int:
    if args.breakdown:
        time_library_calls()
    print(json.dumps(run_one(args.contender, args.producers, args.consumers, args.items, args.folder)))
    return 0


def run_in_fresh_process(name: str, producers: int, consumers: int, items: int, tmp: str,
                         timeout: float = 300, breakdown: bool = False) -> Optional[Dict[str, Any]]:
    """The row of one run, or None if it did not finish within ``timeout`` seconds (``breakdown``:
    with the library's calls timed, see ``time_library_calls``).

    The runner leads a process group of its own, so that a row that does not finish is killed with
    all its producers and consumers; its queue folder is removed either way.
    """
    folder = tempfile.mkdtemp(prefix="turbo_queue-bench-", dir=tmp)
    try:
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "_run", name, str(producers), str(consumers), str(items), folder]
            + (["--breakdown"] if breakdown else []),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException as exc:  # the time ran out, or Ctrl-C (which the group of its own does not get)
            os.killpg(proc.pid, signal.SIGKILL)  # before it is reaped: its group id cannot be anyone else's yet
            proc.communicate()
            if isinstance(exc, subprocess.TimeoutExpired):
                return None
            raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} P={producers} C={consumers} failed:\n{err}")
    return json.loads(out.strip().splitlines()[-1])


# -- the other measurements ------------------------------------------------------------------------

def in_fresh_process(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in a child process: its CPU time is its own, and the memory it takes
    stays out of this process (and out of the peak memory of the processes forked from it later)."""
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        return pool.submit(function, *args).result()


def floor(items: int) -> Dict[str, float]:
    """Cost per item of building it and pickling/unpickling it inside a list of 100 (one process)."""
    started = time.process_time()
    lists = [[make_item(i) for i in range(first, first + LIST)] for first in range(0, items, LIST)]
    built = time.process_time()
    blobs = [pickle.dumps(chunk, pickle.HIGHEST_PROTOCOL) for chunk in lists]
    for blob in blobs:
        pickle.loads(blob)
    done = time.process_time()
    return {"build_us": (built - started) / items * 1e6, "serialize_us": (done - built) / items * 1e6,
            "item_bytes": len(blobs[0]) / LIST}


BATCH_LISTS = 100  # lists of 100 per batch file in the storage measurements: batches of 10,000 items


def _storage_costs(lists: List[List[Dict[str, Any]]], put_batch: Callable[[List[List[Dict[str, Any]]]], None],
                   get_batch: Callable[[int], None], files: int) -> Dict[str, float]:
    """CPU cost of storing ``lists`` through ``put_batch``/``get_batch``, beyond pickling, per item and per file.

    ``put_batch(lists)`` hands over one batch holding ``lists`` (pickled 100 items a chunk);
    ``get_batch(n)`` takes the next batch's ``n`` items. All the lists go through batches of
    BATCH_LISTS lists, then ``files`` batches of one list each: what those cost beyond their
    items (as in big batches, pickling included) is the cost of a batch file's life.
    """
    items = sum(len(chunk) for chunk in lists)
    clock = time.process_time
    started = clock()
    blobs = [pickle.dumps(chunk, pickle.HIGHEST_PROTOCOL) for chunk in lists]
    pickled = clock()
    for blob in blobs:
        pickle.loads(blob)
    unpickled = clock()
    del blobs
    groups = [lists[i : i + BATCH_LISTS] for i in range(0, len(lists), BATCH_LISTS)]
    put_started = clock()
    for group in groups:
        put_batch(group)
    got_started = clock()
    for group in groups:
        get_batch(sum(len(chunk) for chunk in group))
    got_done = clock()
    putting = getting = 0.0
    for k in range(files):
        chunk = lists[k % len(lists)]
        t0 = clock()
        put_batch([chunk])
        t1 = clock()
        get_batch(len(chunk))
        putting, getting = putting + t1 - t0, getting + clock() - t1
    put_us = (got_started - put_started - (pickled - started)) / items * 1e6
    get_us = (got_done - got_started - (unpickled - pickled)) / items * 1e6
    return {
        "put_many_us": put_us, "get_many_us": get_us,
        "file_put_us": putting / files * 1e6 - (put_us * LIST + (pickled - started) / len(lists) * 1e6),
        "file_get_us": getting / files * 1e6 - (get_us * LIST + (unpickled - pickled) / len(lists) * 1e6),
    }


def _lists(items: int) -> List[List[Dict[str, Any]]]:
    items -= items % LIST  # whole lists only
    return [[make_item(i) for i in range(first, first + LIST)] for first in range(0, items, LIST)]


def storage_costs(items: int, tmp: str, files: int = 200) -> Dict[str, float]:
    """What the batch files cost, in one process (CPU time): per item beyond pickling, and per file.

    ``put_many``/``get_many`` of lists of 100 through batches of 10,000 items, against pickling and
    unpickling the same lists alone; then ``files`` batches of one list each, put, flushed and got
    in turn, which is the cost of a batch file on top of its items.
    """
    from turbo_queue import Dequeuer, Enqueuer

    lists = _lists(items)
    folder = tempfile.mkdtemp(prefix="turbo_queue-bench-", dir=tmp)
    try:
        with Enqueuer(folder, batch_size=LIST * BATCH_LISTS, max_batch_delay=3600) as producer, \
                Dequeuer(folder) as consumer:
            def put_batch(group: List[List[Dict[str, Any]]]) -> None:
                for chunk in group:
                    producer.put_many(chunk)
                producer.flush()

            def get_batch(n: int) -> None:
                got = 0
                while got < n:
                    got += len(consumer.get_many(LIST))

            return _storage_costs(lists, put_batch, get_batch, files)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _plain_tables(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID")
    conn.execute("CREATE TABLE items (first INTEGER PRIMARY KEY, n INTEGER, crc INTEGER, data BLOB)")
    conn.executemany("INSERT INTO meta VALUES (?, ?)", [("format", 2), ("codec", "pickle"), ("count", 0),
                                                       ("acked", 0), ("created_by", "host:1")])


def _plain_fill(conn: sqlite3.Connection, group: List[List[Dict[str, Any]]]) -> None:
    """One INSERT per chunk with its CRC-32, the count, and the commit of the transaction begun."""
    first = 0
    for chunk in group:
        data = pickle.dumps(chunk, pickle.HIGHEST_PROTOCOL)
        conn.execute("INSERT INTO items VALUES (?, ?, ?, ?)", (first, len(chunk), zlib.crc32(data), data))
        first += len(chunk)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'count'", (first,))
    conn.execute("COMMIT")


class PlainBatchFiles:
    """The plainest sqlite3 code that does a batch file's work: the floor under turbo_queue's.

    Write: create, schema, one INSERT per chunk with its CRC-32, in one transaction, commit,
    rename ``loading_`` -> ``ready_``. Read: rename ``ready_`` -> ``chosen_``, open, one cursor
    over the chunks with each CRC-32 checked, delete. No locks, no position records, no checks.
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.ready: List[str] = []

    def put_batch(self, group: List[List[Dict[str, Any]]]) -> None:
        name, path = self._new()
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        _plain_tables(conn)
        _plain_fill(conn, group)
        conn.close()
        self._hand_over(name, path)

    def get_batch(self, n: int) -> None:
        path = self._claim()
        conn = sqlite3.connect(path, isolation_level=None)
        self._read(conn, path, n)
        conn.close()
        os.unlink(path)

    def _new(self) -> Tuple[str, str]:
        name = f"{int(time.time())}_{uuid.uuid4()}.db"
        return name, os.path.join(self.folder, "loading_" + name)

    def _hand_over(self, name: str, path: str) -> None:
        os.rename(path, os.path.join(self.folder, "ready_" + name))
        self.ready.append(name)

    def _claim(self) -> str:
        name = self.ready.pop(0)
        path = os.path.join(self.folder, "chosen_" + name)
        os.rename(os.path.join(self.folder, "ready_" + name), path)
        return path

    @staticmethod
    def _read(conn: sqlite3.Connection, path: str, n: int) -> None:
        got = 0
        for _, _, crc, data in conn.execute("SELECT first, n, crc, data FROM items ORDER BY first"):
            if zlib.crc32(data) != crc:
                raise ValueError(f"{path}: a chunk is damaged")
            got += len(pickle.loads(data))
        assert got == n


class PlainImages(PlainBatchFiles):
    """The same work with each batch made and read in memory, as turbo_queue does with a batch of
    at most 1 MiB (Python 3.11+): the floor under that path.

    Write: into a ``:memory:`` database begun from the serialized empty batch, one INSERT per chunk
    with its CRC-32, commit, serialize, one write to ``loading_``, rename to ``ready_``. Read:
    rename to ``chosen_``, one read, deserialize, one cursor with each CRC-32 checked, delete. One
    in-memory connection each way, kept. No locks, no position records, no checks.
    """

    def __init__(self, folder: str) -> None:
        super().__init__(folder)
        self.writer = sqlite3.connect(":memory:", isolation_level=None)
        self.reader = sqlite3.connect(":memory:", isolation_level=None)
        _plain_tables(self.writer)
        self.empty = getattr(self.writer, "serialize")()

    def put_batch(self, group: List[List[Dict[str, Any]]]) -> None:
        getattr(self.writer, "deserialize")(self.empty)
        self.writer.execute("BEGIN")
        _plain_fill(self.writer, group)
        name, path = self._new()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, getattr(self.writer, "serialize")())
        os.close(fd)
        self._hand_over(name, path)

    def get_batch(self, n: int) -> None:
        path = self._claim()
        fd = os.open(path, os.O_RDONLY)
        getattr(self.reader, "deserialize")(os.read(fd, os.fstat(fd).st_size))
        os.close(fd)
        self._read(self.reader, path, n)
        os.unlink(path)


def storage_floor(items: int, tmp: str, files: int = 200, in_memory: bool = False) -> Dict[str, float]:
    """``storage_costs`` of PlainBatchFiles (or PlainImages): what SQLite itself costs for the same work."""
    lists = _lists(items)
    folder = tempfile.mkdtemp(prefix="turbo_queue-bench-", dir=tmp)
    try:
        plain = PlainImages(folder) if in_memory else PlainBatchFiles(folder)
        return _storage_costs(lists, plain.put_batch, plain.get_batch, files)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _latency_consumer(path: str, samples: int, out: Any, ready: Any) -> None:
    import turbo_queue

    q = turbo_queue.Queue(path=path)
    ready.set()
    delays = []
    for _ in range(samples):
        sent = q.get(timeout=30)
        delays.append(time.monotonic() - sent)
    out.put(delays)


def latency(samples: int, flush: bool, tmp: str) -> Dict[str, float]:
    """put-to-get delay of single items at a low rate (one every 5 ms), default settings or flush()."""
    import turbo_queue

    ctx = multiprocessing.get_context("fork")
    folder = tempfile.mkdtemp(prefix="turbo_queue-bench-", dir=tmp)
    try:
        q = turbo_queue.Queue(path=folder)
        out, ready = ctx.SimpleQueue(), ctx.Event()
        consumer = ctx.Process(target=_latency_consumer, args=(folder, samples, out, ready))
        consumer.start()
        ready.wait()
        for _ in range(samples):
            q.put(time.monotonic())
            if flush:
                q.flush()
            time.sleep(0.005)
        delays = sorted(out.get())
        consumer.join()
        q.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"p50_ms": delays[len(delays) // 2] * 1000, "p99_ms": delays[int(len(delays) * 0.99) - 1] * 1000,
            "avg_ms": statistics.mean(delays) * 1000}


def _idle(path: str, seconds: float) -> float:
    """The CPU seconds a consumer spends waiting ``seconds`` on the empty queue at ``path``."""
    import turbo_queue

    q = turbo_queue.Queue(path=path)
    try:
        q.get_nowait()  # its first look, and everything made once, before the clock starts
    except queue_module.Empty:
        pass
    before = resource.getrusage(resource.RUSAGE_SELF)
    try:
        q.get(timeout=seconds)
    except queue_module.Empty:
        pass
    after = resource.getrusage(resource.RUSAGE_SELF)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def idle_cpu(seconds: float, tmp: str) -> float:
    """Share of one core an idle consumer uses while it waits on an empty queue."""
    folder = tempfile.mkdtemp(prefix="turbo_queue-bench-", dir=tmp)
    try:
        code = f"import runpy; print(runpy.run_path({os.path.abspath(__file__)!r})['_idle']({folder!r}, {seconds}))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return float(out.stdout.strip().splitlines()[-1]) / seconds
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _backlog_producer(path: str, start: int, stop: int) -> None:
    import turbo_queue

    with turbo_queue.Queue(path=path) as q:
        for first in range(start, stop, LIST):
            q.put_many([make_item(i) for i in range(first, min(first + LIST, stop))])


def _backlog_consumer(path: str, total: int, received: Any) -> None:
    import turbo_queue

    with turbo_queue.Queue(path=path) as q:
        while received.value < total:
            try:
                items = q.get_many(LIST * 10, timeout=_POLL)
            except queue_module.Empty:
                continue
            with received.get_lock():
                received.value += len(items)


def _backlog_phase(target: Callable[..., None], argsets: List[tuple]) -> List[float]:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=target, args=args) for args in argsets]
    for p in procs:
        p.start()
    pids = [p.pid for p in procs]
    peak = {pid: 0 for pid in pids}
    while any(p.is_alive() for p in procs):  # VmHWM is the peak resident memory so far
        for pid in pids:
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            peak[pid] = max(peak[pid], int(line.split()[1]) / 1024)
            except OSError:
                pass  # exited
        time.sleep(0.2)
    for p in procs:
        p.join()
    return [peak[pid] for pid in pids]


def backlog(items: int, workers: int, folder_root: str) -> Dict[str, Any]:
    """Put ``items`` with no consumer running, then drain them: peak memory of every process."""
    ctx = multiprocessing.get_context("fork")
    folder = tempfile.mkdtemp(prefix="turbo_queue-backlog-", dir=folder_root)
    try:
        share = -(-items // workers)
        started = time.monotonic()
        fill = _backlog_phase(_backlog_producer, [(folder, i * share, min(items, (i + 1) * share)) for i in range(workers)])
        filled = time.monotonic()
        received = ctx.Value("q", 0)
        drain = _backlog_phase(_backlog_consumer, [(folder, items, received) for _ in range(workers)])
        drained = time.monotonic()
        return {"items": items, "fill_peak_mb": fill, "drain_peak_mb": drain, "received": received.value,
                "fill_s": filled - started, "drain_s": drained - filled}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _noop_worker(path: str, results_path: str) -> None:
    import turbo_queue

    q = turbo_queue.Queue(path=path)
    done = turbo_queue.Queue(path=results_path)
    while True:
        items = q.get_many(1000)
        if items[-1] is None:
            done.put_many(items[:-1])
            break
        done.put_many(items)
        done.flush()


def taskito_shape(tmp: str) -> Dict[str, float]:
    """10,000 no-op items enqueued in one call, processed by one worker per core; round-trip latency."""
    import turbo_queue

    ctx = multiprocessing.get_context("fork")
    folder = tempfile.mkdtemp(prefix="turbo_queue-bench-", dir=tmp)
    try:
        jobs, results = turbo_queue.Queue(path=os.path.join(folder, "jobs")), turbo_queue.Queue(path=os.path.join(folder, "done"))
        workers = os.cpu_count() or 1
        items = [{"task": "noop", "n": i} for i in range(10_000)]
        started = time.perf_counter()
        jobs.put_many(items)
        jobs.flush()
        enqueued = time.perf_counter()
        procs = [ctx.Process(target=_noop_worker, args=(jobs.path, results.path)) for _ in range(workers)]
        for p in procs:
            p.start()
        got = 0
        while got < len(items):
            got += len(results.get_many(10_000, timeout=60))
        processed = time.perf_counter()
        for _ in range(workers):  # one stop signal per worker, each in a batch of its own
            jobs.put(None)
            jobs.flush()
        for p in procs:
            p.join()
        delays = []
        echo = ctx.Process(target=_echo, args=(jobs.path, results.path, 100))
        echo.start()
        for i in range(100):
            sent = time.perf_counter()
            jobs.put(i)
            jobs.flush()
            results.get(timeout=30)
            delays.append(time.perf_counter() - sent)
        echo.join()
        delays.sort()
        jobs.close()
        results.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"enqueue_per_s": len(items) / (enqueued - started), "process_per_s": len(items) / (processed - started),
            "rt_avg_ms": statistics.mean(delays) * 1000, "rt_p50_ms": delays[50] * 1000, "rt_p99_ms": delays[98] * 1000}


def _echo(jobs_path: str, results_path: str, n: int) -> None:
    import turbo_queue

    jobs, results = turbo_queue.Queue(path=jobs_path), turbo_queue.Queue(path=results_path)
    for _ in range(n):
        results.put(jobs.get(timeout=30))
        results.flush()


def _pingpong_echo(tasks: Any, results: Any, flush: bool) -> None:
    while (task := tasks.get()) is not None:
        results.put(task)
        if flush:
            results.flush()


#: The ping-pong contenders: (name, queue maker, flush after each put).
PINGPONG = {
    "mp": ("multiprocessing.Queue", "mp", False),
    "turbo": ("turbo_queue.Queue", "turbo", False),
    "turbo-flush": ("turbo_queue.Queue, flush() after each put", "turbo", True),
}


def pingpong(contender: str, round_trips: int) -> List[float]:
    """Request/response: one task out to a worker process, its echo back, before the next task.

    Default settings, as a program written for ``multiprocessing.Queue`` has them; the
    ``turbo-flush`` contender flushes after each put (what a lone item cannot cost less than).
    The round trips in seconds, after 20 that warm up.
    """
    _, kind, flush = PINGPONG[contender]
    ctx = multiprocessing.get_context("fork")
    if kind == "mp":
        tasks, results = ctx.Queue(), ctx.Queue()
    else:
        import turbo_queue

        tasks, results = turbo_queue.Queue(), turbo_queue.Queue()
    worker = ctx.Process(target=_pingpong_echo, args=(tasks, results, flush))
    worker.start()
    delays = []
    for i in range(round_trips + 20):
        sent = time.perf_counter()
        tasks.put(i)
        if flush:
            tasks.flush()
        got = results.get(timeout=30)
        delays.append(time.perf_counter() - sent)
        if got != i:
            raise RuntimeError(f"ping-pong {contender}: sent {i}, got {got!r} back")
    tasks.put(None)
    worker.join()
    return delays[20:]


def pingpong_rows(round_trips: int, rounds: int) -> Dict[str, Dict[str, float]]:
    """Each ping-pong contender ``rounds`` times, taking turns; p50/p99 over all its round trips."""
    samples: Dict[str, List[float]] = {short: [] for short in PINGPONG}
    for _ in range(rounds):
        for short in PINGPONG:
            samples[short] += in_fresh_process(pingpong, short, round_trips)
    rows = {}
    for short, delays in samples.items():
        delays.sort()
        rows[short] = {"round_trips": len(delays), "p50_ms": delays[len(delays) // 2] * 1000,
                       "p99_ms": delays[int(len(delays) * 0.99) - 1] * 1000, "mean_ms": statistics.mean(delays) * 1000}
    return rows


# -- --herd: what waiting costs --------------------------------------------------------------------

HERD_BATCHES = 150  # batches of LIST items handed over, one at a time, to consumers that all wait
HERD_GAP = 0.02  # seconds between two: enough for 32 woken consumers to wait again on 2 cores


class _PlainWaiter:
    """The plainest code a woken consumer of a folder runs: its own inotify watch of renames into
    the folder, a poll, and for each ready_ file named, a rename to claim it (one wins, the
    others' fails), then read, unpickle, unlink."""

    def __init__(self, folder: str) -> None:
        from turbo_queue import _platform

        self.folder = folder
        self.inotify = _platform.Inotify(nonblocking=True)
        self.inotify.add_watch(folder, _platform.Inotify.MOVED_TO)
        self.poller = select.poll()
        self.poller.register(self.inotify.fd, select.POLLIN)
        self.came: List[str] = []

    def get(self) -> Any:
        while True:
            while self.came:
                name = self.came.pop(0)
                chosen = os.path.join(self.folder, "chosen_" + name[len("ready_"):])
                try:
                    os.rename(os.path.join(self.folder, name), chosen)
                except FileNotFoundError:
                    continue  # another one won
                with open(chosen, "rb") as f:
                    data = f.read()
                os.unlink(chosen)
                return pickle.loads(data)
            self.poller.poll(60_000)
            self.came += [os.fsdecode(name) for _, _, name in self.inotify.read() if name.startswith(b"ready_")]


def _plain_put(folder: str, index: int, items: List[Any]) -> None:
    hidden = os.path.join(folder, f".creating_{index}")
    with open(hidden, "wb") as f:
        f.write(pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL))
    os.rename(hidden, os.path.join(folder, f"ready_{index}"))


def _herd_consumer(kind: str, where: Any, ready: Any, go: Any, out: Any) -> None:
    if kind == "turbo":
        from turbo_queue import Dequeuer

        source: Any = Dequeuer(where)
        get = lambda: source.get_many(LIST, timeout=60)  # noqa: E731
    elif kind == "plain":
        get = _PlainWaiter(where).get
    else:
        get = lambda: where.get(timeout=60)  # noqa: E731
    ready.release()
    go.wait()
    start, items = time.process_time(), 0
    while True:
        got = get()
        if got == [None]:
            break
        items += len(got)
    out.put((items, time.process_time() - start))
    if kind == "turbo":
        source.close()


def herd(kind: str, consumers: int, tmp: str) -> Dict[str, float]:
    """What waiting costs: ``consumers`` processes wait on an empty queue, and one producer hands
    over HERD_BATCHES lists of LIST items, HERD_GAP apart, so that every consumer waits at each; the
    CPU the consumers used per batch (summed over their processes: the one woken to take it and
    all those woken for nothing), and per batch and waiting consumer. ``kind``: "turbo"
    (``Enqueuer.put_many`` and ``flush``, ``Dequeuer.get_many``), "plain" (the floor of waking
    every consumer of a folder: ``_PlainWaiter``) or "mp" (``multiprocessing.Queue`` of lists)."""
    ctx = multiprocessing.get_context("fork")
    folder = tempfile.mkdtemp(prefix="turbo_queue-bench-", dir=tmp)
    try:
        where: Any = ctx.Queue() if kind == "mp" else folder
        ready, go, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_herd_consumer, args=(kind, where, ready, go, out)) for _ in range(consumers)]
        for proc in procs:
            proc.start()
        for _ in procs:
            ready.acquire()
        go.set()
        time.sleep(0.3)  # every consumer waits by now
        if kind == "turbo":
            from turbo_queue import Enqueuer

            enqueuer = Enqueuer(folder, max_batch_delay=3600)
            put = lambda items: (enqueuer.put_many(items), enqueuer.flush())  # noqa: E731
        elif kind == "plain":
            made = iter(range(1 << 62))
            put = lambda items: _plain_put(folder, next(made), items)  # noqa: E731
        else:
            put = where.put
        for i in range(HERD_BATCHES):
            put(list(range(i * LIST, (i + 1) * LIST)))
            time.sleep(HERD_GAP)
        for _ in procs:
            put([None])
        if kind == "turbo":
            enqueuer.close()
        results = [out.get(timeout=60) for _ in procs]
        for proc in procs:
            proc.join()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    received = sum(items for items, _ in results)
    if received != HERD_BATCHES * LIST:
        raise RuntimeError(f"the herd's consumers got {received:,} items of {HERD_BATCHES * LIST:,}")
    per_batch = sum(cpu for _, cpu in results) / (HERD_BATCHES + consumers)
    return {"consumers": consumers, "ms_per_batch": per_batch * 1e3, "ms_per_batch_and_consumer": per_batch * 1e3 / consumers}


def herd_rows(sweep: List[int], rounds: int, tmp: str) -> List[Dict[str, Any]]:
    """``herd`` for each number of consumers and kind, taking turns; the median of ``rounds``."""
    runs: Dict[Tuple[str, int], List[Dict[str, float]]] = {}
    for consumers in sweep:
        for _ in range(rounds):
            for kind in ("turbo", "plain", "mp"):
                runs.setdefault((kind, consumers), []).append(in_fresh_process(herd, kind, consumers, tmp))
    rows = []
    for (kind, consumers), found in runs.items():
        found.sort(key=lambda r: r["ms_per_batch"])
        rows.append({"kind": kind, **found[len(found) // 2], "range_ms": [found[0]["ms_per_batch"], found[-1]["ms_per_batch"]]})
    return rows


# -- the report ------------------------------------------------------------------------------------

def breakdown_text(breakdown: Dict[str, Dict[str, List[float]]]) -> str:
    """A row's --breakdown, one line per role: each timed call's count and CPU milliseconds."""
    return "\n".join(
        f"    {role}s: " + ", ".join(f"{label} {calls:,.0f}x {seconds * 1e3:.1f} ms"
                                    for label, (calls, seconds) in sorted(timed.items()))
        for role, timed in breakdown.items() if timed
    )


def table(rows: List[Dict[str, Any]]) -> str:
    lines = ["| P=C | contender | items/s | CPU us/item | peak MB | lost | duplicated |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['producers']} | {r['contender']} | {r['items_per_s']:,.0f} | {r['cpu_us_per_item']:.2f} "
                     f"| {r['peak_mb']:.0f} | {r['lost']} | {r['duplicated']} |")
    return "\n".join(lines)


def chart(rows: List[Dict[str, Any]], path: str) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = list(dict.fromkeys(r["contender"] for r in rows))
    sweep = sorted({r["producers"] for r in rows})
    fig, ax = plt.subplots(figsize=(10, 6.5))
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        values = [statistics.median([r["items_per_s"] for r in rows if r["contender"] == name and r["producers"] == p] or [0])
                  for p in sweep]
        ax.bar([i + k * width for i in range(len(sweep))], values, width, label=name)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(sweep))])
    ax.set_xticklabels([f"P = C = {p}" for p in sweep])
    ax.set_ylabel("items per second")
    ax.set_title("Moving ~130-byte items between processes (higher is better)")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))  # room below the axes for the legend
    fig.savefig(path, dpi=110)
    return path


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "_run":
        return _runner(args)
    if args.command == "_storage":
        return _storage_runner(args)
    if args.storage:
        return run_storage(args)
    if args.herd:
        return run_herd(args)
    return run(args)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", type=int, default=200_000, help="items per row (default 200,000)")
    p.add_argument("--sweep", default="1,2,4,8,16,32", help="values of P = C (default 1,2,4,8,16,32)")
    p.add_argument("--rounds", type=int, default=1, help="times each row runs; the median is kept (default 1)")
    p.add_argument("--only", default="", help=f"comma-separated contenders among: {', '.join(SHORT)}")
    p.add_argument("--tmp", default="/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir(),
                   help="where queue folders go (default /dev/shm)")
    p.add_argument("--extras", action="store_true", help="also latency, idle CPU, floor, batch-file costs and the taskito shape")
    p.add_argument("--disk", default=tempfile.gettempdir(),
                   help="where the durable contender's folders go (default the temp dir, on disk)")
    p.add_argument("--storage", action="store_true",
                   help="only the batch-file costs, in one process each: turbo_queue against the plainest sqlite3 "
                        "code doing the same work (PlainBatchFiles, and PlainImages in memory), taking turns, --rounds times")
    p.add_argument("--baseline", default="", metavar="PYTHON",
                   help="with --storage: also measure the turbo_queue that this interpreter imports, in the same "
                        "turns (e.g. the venv of a worktree of main)")
    p.add_argument("--backlog", type=int, default=0, help="also the backlog run with this many items (e.g. 5000000)")
    p.add_argument("--backlog-folder", default=tempfile.gettempdir(), help="disk folder for the backlog run")
    p.add_argument("--pingpong", type=int, default=0,
                   help="also the ping-pong round trip (one task out, its echo back), this many per round "
                        "(--extras: 500 unless given)")
    p.add_argument("--herd", default="", metavar="C,C,...",
                   help="only what waiting costs: for each number of consumers, all waiting on an empty queue, the CPU they "
                        "use per batch handed over (turbo_queue and multiprocessing.Queue of lists, taking turns)")
    p.add_argument("--breakdown", action="store_true",
                   help="time the library's calls in each process of the turbo_queue rows (CPU of the calling "
                        "thread, inclusive) and print where each row's CPU went; the wrappers cost CPU too, so "
                        "leave it out of a run whose throughput you quote")
    p.add_argument("--chart", default="", help="write a PNG chart here (needs matplotlib)")
    p.add_argument("--json", default="", help="write all results as JSON here")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python tools/bench.py", description=(__doc__ or "").replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # no reST in --help
    sub = parser.add_subparsers(dest="command", help=argparse.SUPPRESS, metavar=argparse.SUPPRESS)  # _run: internal
    runner = sub.add_parser("_run")
    runner.add_argument("contender")
    runner.add_argument("producers", type=int)
    runner.add_argument("consumers", type=int)
    runner.add_argument("items", type=int)
    runner.add_argument("folder")
    runner.add_argument("--breakdown", action="store_true")
    storage = sub.add_parser("_storage")
    storage.add_argument("kind", choices=("floor", "floor-memory", "turbo_queue"))
    storage.add_argument("items", type=int)
    storage.add_argument("folder")
    add_arguments(parser)
    return parser


def _storage_runner(args: argparse.Namespace) -> int:
    if args.kind in ("floor", "floor-memory"):
        in_memory = args.kind == "floor-memory"
        row: Dict[str, Any] = {"code": "plain sqlite3" + (", in memory" if in_memory else ", in the file"),
                               **storage_floor(args.items, args.folder, in_memory=in_memory)}
    else:
        import turbo_queue

        checkout = os.path.dirname(os.path.dirname(os.path.abspath(turbo_queue.__file__)))
        row = {"code": f"turbo_queue ({checkout})", **storage_costs(args.items, args.folder)}
    print(json.dumps(row))
    return 0


def run_storage(args: argparse.Namespace) -> int:
    """The batch-file costs of turbo_queue (and ``--baseline``'s) beside the plain sqlite3 floor, taking turns."""
    items = min(args.items, 200_000)
    contenders = [(sys.executable, "floor"), (sys.executable, "turbo_queue")]
    if hasattr(sqlite3.Connection, "serialize"):
        contenders.insert(1, (sys.executable, "floor-memory"))
    if args.baseline:
        contenders.append((args.baseline, "turbo_queue"))
    print(f"# batch-file costs in one process: {items:,} items in lists of 100, batches of {LIST * BATCH_LISTS:,}, "
          f"{args.rounds} rounds; load average {os.getloadavg()[0]:.2f}", flush=True)
    rows: List[Dict[str, Any]] = []
    for _ in range(args.rounds):
        for python, kind in contenders:
            out = subprocess.run([python, os.path.abspath(__file__), "_storage", kind, str(items), args.tmp],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(f"{python} {kind} failed:\n{out.stderr}")
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["life_us"] = row["file_put_us"] + row["file_get_us"]
            row["overhead_us"] = row["put_many_us"] + row["get_many_us"]
            rows.append(row)
            print(f"  {row['code']}: put_many {row['put_many_us']:.3f} + get_many {row['get_many_us']:.3f} us/item, "
                  f"file {row['file_put_us']:.0f} + {row['file_get_us']:.0f} us", file=sys.stderr, flush=True)
    keys = ("put_many_us", "get_many_us", "overhead_us", "file_put_us", "file_get_us", "life_us")
    lines = ["| code | put_many | get_many | both, per item | file: producer | consumer | whole life |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    medians = []
    for code in dict.fromkeys(r["code"] for r in rows):
        same = [r for r in rows if r["code"] == code]
        median = {key: statistics.median(r[key] for r in same) for key in keys}
        medians.append({"code": code, **median})
        cells = [f"{median[k]:.3f} ({min(r[k] for r in same):.2f}-{max(r[k] for r in same):.2f})" for k in keys[:3]]
        cells += [f"{median[k]:.0f} ({min(r[k] for r in same):.0f}-{max(r[k] for r in same):.0f})" for k in keys[3:]]
        lines.append(f"| {code} | " + " | ".join(cells) + " |")
    print("\nus of CPU beyond pickling, per item and per batch file (median, range over rounds):\n")
    print("\n".join(lines))
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "medians": medians}, f, indent=2)
    return 0


def run_herd(args: argparse.Namespace) -> int:
    rows = herd_rows([int(x) for x in args.herd.split(",")], args.rounds, args.tmp)
    print(f"# what waiting costs: {HERD_BATCHES} batches of {LIST} handed over one at a time, {HERD_GAP * 1e3:.0f} ms apart, to consumers "
          f"that all wait; {os.cpu_count()} cores, Python {sys.version.split()[0]}, medians of {args.rounds}")
    print("\n| consumers | queue | consumers' CPU per batch, ms | range | per batch and waiting consumer, ms |\n|---:|---|---:|---|---:|")
    for row in rows:
        name = {"turbo": "turbo_queue Dequeuer.get_many", "plain": "plain inotify and rename, each its own watch (the floor)",
                "mp": "multiprocessing.Queue of lists"}[row["kind"]]
        low, high = row["range_ms"]
        print(f"| {row['consumers']} | {name} | {row['ms_per_batch']:.3f} | {low:.3f}-{high:.3f} "
              f"| {row['ms_per_batch_and_consumer']:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


def run(args: argparse.Namespace) -> int:
    chosen = [SHORT[s.strip()] for s in args.only.split(",") if s.strip()] or list(CONTENDERS)
    contenders = [name for name in chosen if available(CONTENDERS[name])]
    skipped = [name for name in chosen if name not in contenders]
    sweep = [int(x) for x in args.sweep.split(",")]
    rows: List[Dict[str, Any]] = []
    timeouts: List[str] = []
    print(f"# turbo_queue bench: {args.items:,} items per row, P = C in {sweep}, {os.cpu_count()} cores, "
          f"Python {sys.version.split()[0]}", flush=True)
    if skipped:
        print(f"# not installed (pip install '.[bench]'): {', '.join(skipped)}", flush=True)
    for p in sweep:
        for _ in range(args.rounds):
            for name in contenders:  # taking turns: noise hits every contender alike
                where = args.disk if CONTENDERS[name].on_disk else args.tmp
                row = run_in_fresh_process(name, p, p, args.items, where, breakdown=args.breakdown)
                if row is None:
                    print(f"  P=C={p} {name}: did not finish in time", file=sys.stderr, flush=True)
                    timeouts.append(f"P=C={p} {name}")
                    continue
                rows.append(row)
                cpu = row["cpu_s"]
                print(f"  P=C={p} {name}: {row['items_per_s']:,.0f} items/s, {row['cpu_us_per_item']:.2f} us/item, "
                      f"lost {row['lost']}, duplicated {row['duplicated']}; CPU s: producers' main threads "
                      f"{cpu['producer_main']:.2f} + other threads {cpu['producer_threads']:.2f}, consumers' "
                      f"{cpu['consumer_main']:.2f} + {cpu['consumer_threads']:.2f}, outside {cpu['outside']:.2f}",
                      file=sys.stderr, flush=True)
                if "breakdown" in row:
                    print(breakdown_text(row["breakdown"]), file=sys.stderr, flush=True)
    medians = []
    for p in sweep:
        for name in contenders:
            same = [r for r in rows if r["producers"] == p and r["contender"] == name]
            same.sort(key=lambda r: r["items_per_s"])
            if same:
                medians.append(same[len(same) // 2])
    print()
    print(table(medians))
    results: Dict[str, Any] = {"rows": rows, "medians": medians, "timeouts": timeouts}
    if timeouts:
        print(f"\ndid not finish in time: {', '.join(timeouts)}")
    failed = any(r["lost"] for r in rows)
    if args.extras:
        results["floor"] = f = in_fresh_process(floor, min(args.items, 100_000))
        print(f"\nfloor: building an item {f['build_us']:.2f} us, pickling + unpickling it in a list of 100 "
              f"{f['serialize_us']:.2f} us, {f['item_bytes']:.0f} bytes pickled")
        results["storage_floor"] = c = in_fresh_process(storage_floor, min(args.items, 200_000), args.tmp)
        print(f"batch files in plain sqlite3, one process: writing {c['put_many_us']:.2f} us and reading "
              f"{c['get_many_us']:.2f} us per item beyond pickling; each batch file {c['file_put_us']:.0f} us to "
              f"write and {c['file_get_us']:.0f} us to read")
        results["storage"] = c = in_fresh_process(storage_costs, min(args.items, 200_000), args.tmp)
        print(f"batch files, one process: put_many {c['put_many_us']:.2f} us and get_many {c['get_many_us']:.2f} us "
              f"per item beyond pickling; each batch file {c['file_put_us']:.0f} us for its producer and "
              f"{c['file_get_us']:.0f} us for its consumer")
        for flush in (False, True):
            lat = latency(200, flush, args.tmp)
            results[f"latency_{'flush' if flush else 'default'}"] = lat
            print(f"latency, {'flush() after each put' if flush else 'default settings'}: p50 {lat['p50_ms']:.2f} ms, "
                  f"p99 {lat['p99_ms']:.2f} ms")
        results["idle_cpu"] = idle = idle_cpu(5.0, args.tmp)
        print(f"idle consumer: {idle * 100:.2f}% of a core")
        results["taskito"] = t = taskito_shape(args.tmp)
        print(f"taskito shape: enqueue {t['enqueue_per_s']:,.0f}/s, processing {t['process_per_s']:,.0f}/s, "
              f"round trip avg {t['rt_avg_ms']:.2f} ms, p50 {t['rt_p50_ms']:.2f} ms, p99 {t['rt_p99_ms']:.2f} ms")
    round_trips = args.pingpong or (500 if args.extras else 0)
    if round_trips:
        results["pingpong"] = pp = pingpong_rows(round_trips, args.rounds)
        print("\n| ping-pong, one task out and its echo back | round trips | p50 ms | p99 ms | mean ms |\n|---|---:|---:|---:|---:|")
        for short, row in pp.items():
            print(f"| {PINGPONG[short][0]} | {row['round_trips']:,} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
                  f"| {row['mean_ms']:.2f} |")
    if args.backlog:
        results["backlog"] = b = backlog(args.backlog, 2, args.backlog_folder)
        print(f"backlog of {b['items']:,} items: fill peak MB per process {[round(x) for x in b['fill_peak_mb']]}, "
              f"drain peak MB per process {[round(x) for x in b['drain_peak_mb']]}, received {b['received']:,}")
        failed = failed or b["received"] < b["items"]
    if args.chart and chart(medians, args.chart):
        print(f"\nchart: {args.chart}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    if failed:
        print("\nFAILED: a row lost items", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
