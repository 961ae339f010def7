"""``Pipeline``: Kafka -> sources -> in-folder -> workers -> out-folder -> sinks -> Kafka, supervised.

Sources hold the topic's partitions; any number of workers share the work through the in-folder
(so workers may outnumber partitions); sinks produce what the workers handed over. Every child
is supervised (started again when it dies); SIGTERM or SIGINT stops them in order: the sources
stop and commit, the workers drain the in-folder, the sinks deliver and acknowledge the
out-folder. Nothing handed over is lost at any kill, since each stage acknowledges its input only
after its output is handed over (the sources commit only after hand-over).
"""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, Optional, Sequence, TextIO, Tuple, Union

from .. import _folder, _platform
from .._checks import positive_int, true_or_false
from ..recovery import recover
from ..supervisor import Supervisor
from ._errors import EXIT_OK, KafkaUnavailable, import_confluent_kafka
from .status import read_statuses
from .worker import Worker

log = logging.getLogger("turbo_queue.kafka")

PathLike = Union[str, "os.PathLike[str]"]

#: The subfolders of a pipeline's folder: what the sources fill, what the sinks produce, and what
#: the dead-letter sink produces (the messages the function failed on).
IN, OUT, DEAD = "in", "out", "dead"
#: Seconds a child has after SIGTERM before SIGKILL (a worker finishes its round, a sink waits for
#: the broker's confirmations of what is in flight). Killed, it loses nothing: it is only slower.
STOP_TIMEOUT = 30.0


def _stop_on_signals(stop: Callable[[], None]) -> None:
    def handler(signum: int, frame: object) -> None:
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _run_source(folder: str, settings: Dict[str, Any]) -> None:
    from .source import KafkaSource

    source = KafkaSource(folder, **settings)
    _stop_on_signals(source.stop)
    source.run()


def _run_sink(folder: str, settings: Dict[str, Any]) -> None:
    from .sink import KafkaSink  # type: ignore[import-not-found,unused-ignore]

    sink = KafkaSink(folder, **settings)
    _stop_on_signals(sink.stop)
    sink.run()


def _run_worker(in_folder: str, out_folder: str, function: Callable[..., Any], settings: Dict[str, Any]) -> None:
    worker = Worker(in_folder, out_folder, function, **settings)
    _stop_on_signals(worker.stop)
    worker.run()


def _has_batches(folder: str, states: Sequence[str] = (_folder.LOADING, _folder.READY, _folder.CHOSEN)) -> int:
    """How many batch files in ``states`` the folder holds (0 for a missing folder)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    return sum(1 for name in names if (parsed := _folder.parse_name(name)) is not None and parsed.state in states)


class _Drained:
    """True once ``folder`` holds no batch waiting or in work; recovers orphans now and then meanwhile."""

    def __init__(self, folder: str) -> None:
        self.folder, self._recovered = folder, time.monotonic()

    def __call__(self) -> bool:
        if not _has_batches(self.folder):
            return True
        if time.monotonic() - self._recovered >= 1.0:  # a dead child's batch: nobody else would look for it
            self._recovered = time.monotonic()
            recover(self.folder)
        return False


def check_kafka(bootstrap_servers: str, topics: Sequence[str], config: Dict[str, Any], timeout: float,
                stopped: Callable[[], bool] = lambda: False) -> None:
    """KafkaUnavailable unless a broker answers and each named topic exists, within ``timeout`` seconds.

    Runs in a child process of its own, so that no Kafka client's threads live in the supervisor
    that forks the pipeline's processes. Returns early, checking nothing more, once ``stopped()``.
    """
    def check(result: Any) -> None:
        try:
            ck = import_confluent_kafka()
            from confluent_kafka.admin import AdminClient

            admin = AdminClient({**config, "bootstrap.servers": bootstrap_servers})
            deadline = time.monotonic() + timeout
            named = [t for t in topics if not t.startswith("^")]
            while True:
                try:
                    metadata = admin.list_topics(timeout=max(deadline - time.monotonic(), 0.1))
                except ck.KafkaException as exc:
                    result.put(("unavailable", f"no Kafka broker answered at {bootstrap_servers} within {timeout:g} s "
                                               f"({exc}): is it running, is the address right, do -X settings match it?",
                                None))
                    return
                missing = [t for t in named if t not in metadata.topics or metadata.topics[t].error is not None]
                if not missing:
                    result.put(("ok", "", None))
                    return
                if time.monotonic() >= deadline:
                    result.put(("unavailable", f"topic {missing[0]!r} does not exist at {bootstrap_servers} (waited "
                                               f"{timeout:g} s): create it first; the pipeline does not create topics",
                                missing[0]))
                    return
                time.sleep(0.5)
        except BaseException as exc:
            result.put(("error", f"{type(exc).__name__}: {exc}", None))

    context = multiprocessing.get_context("fork")
    result = context.SimpleQueue()
    process = context.Process(target=check, args=(result,), daemon=True)
    process.start()
    deadline = time.monotonic() + timeout + 30
    while process.exitcode is None and time.monotonic() < deadline and not stopped():
        process.join(0.1)
    if process.exitcode is None:
        process.kill()
        process.join()
        if stopped():
            return
        raise KafkaUnavailable(f"no Kafka broker answered at {bootstrap_servers} within {timeout:g} s",
                               bootstrap_servers)
    outcome, text, topic = result.get() if not result.empty() else ("error", "the check died", None)
    if outcome == "unavailable":
        raise KafkaUnavailable(text, bootstrap_servers, topic)
    if outcome == "error":
        raise ImportError(text) if "confluent-kafka" in text else RuntimeError(text)


class _Progress:
    """The progress line on a terminal: messages/s in and out, lag, backlog, restarts."""

    def __init__(self, pipeline: "Pipeline", stream: TextIO) -> None:
        self.pipeline, self.stream = pipeline, stream
        self._last: Optional[Tuple[float, int, int]] = None
        self.total_in = self.total_out = 0
        self._seen: Dict[str, int] = {}  # per status file: the count last seen (a restart resets it)
        self._width = 0

    def _grow(self, key: str, value: int) -> int:
        before = self._seen.get(key, 0)
        self._seen[key] = value
        return value - before if value >= before else value

    def figures(self) -> Dict[str, int]:
        from ..monitor import snapshot

        pipeline = self.pipeline
        lag = 0
        for status in read_statuses(pipeline.in_folder):
            if status.get("kind") == "source":
                self.total_in += self._grow(f"source-{status.get('pid')}", int(status.get("messages_in", 0)))
                lag += sum(p.get("lag") or 0 for p in status.get("partitions", []))
        for status in read_statuses(pipeline.out_folder):
            if status.get("kind") == "sink":
                self.total_out += self._grow(f"sink-{status.get('pid')}", int(status.get("delivered", 0)))
        backlog = 0
        for folder in (pipeline.in_folder, pipeline.out_folder):
            try:
                backlog += snapshot(folder).backlog_items
            except OSError:
                pass
        return {"in": self.total_in, "out": self.total_out, "lag": lag, "backlog": backlog}

    def tick(self, supervisor: Supervisor) -> None:
        now = time.monotonic()
        figures = self.figures()
        if self._last is None:
            self._last = (now, figures["in"], figures["out"])
            return
        then, was_in, was_out = self._last
        seconds = max(now - then, 1e-6)
        self._last = (now, figures["in"], figures["out"])
        line = (f"in {(figures['in'] - was_in) / seconds:,.0f}/s  out {(figures['out'] - was_out) / seconds:,.0f}/s  "
                f"lag {figures['lag']:,}  backlog {figures['backlog']:,}  restarts {supervisor.restarts}  "
                f"(total in {figures['in']:,}, out {figures['out']:,})")
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)

    def end(self) -> None:
        if self._width:
            self.stream.write("\n")
            self.stream.flush()


class Pipeline:
    """Kafka topic ``from_topic`` -> ``function`` in ``workers`` processes -> Kafka topic ``to_topic``.

    ``sources`` KafkaSource processes consume ``from_topic`` (a name, a ``^regex``, or a list) in
    consumer group ``group`` into ``<folder>/in``; ``workers`` :class:`Worker` processes call
    ``function`` on each Message and put what it returns into ``<folder>/out``; ``sinks`` KafkaSink
    processes produce that to ``to_topic``. Without ``folder``, a private folder in ``/dev/shm``
    is used and removed at the end, once everything in it was delivered (else it is kept, and
    said so). ``config`` holds librdkafka settings for every client (``-X``); ``value="json"``
    decodes the values; ``dead_letter`` names the topic for messages that cannot be decoded, that
    the function failed on, or that the broker refused (else they are set aside in ``bad_``
    batches). ``batch`` (default: as :func:`~turbo_queue.kafka.batched` marks the function)
    gives the function lists of Messages. ``progress`` (default: when stderr is a terminal)
    prints a progress line each second. ``run()`` runs until SIGTERM, SIGINT or ``stop()``.

    Raises ValueError for a bad setting.
    """

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        bootstrap_servers: str,
        from_topic: Union[str, Sequence[str]],
        to_topic: str,
        group: str,
        workers: Optional[int] = None,
        sources: int = 1,
        sinks: int = 1,
        folder: Optional[PathLike] = None,
        config: Optional[Dict[str, Any]] = None,
        value: str = "bytes",
        dead_letter: Optional[str] = None,
        batch: Optional[bool] = None,
        max_crashes: int = 3,
        durable: bool = False,
        max_ready_files: int = 100,
        connect_timeout: float = 30.0,
        progress: Optional[bool] = None,
    ) -> None:
        if not callable(function):
            raise ValueError(f"function must be callable, got {function!r}")
        if not bootstrap_servers:
            raise ValueError("bootstrap_servers must name at least one broker, as HOST:PORT")
        topics = [from_topic] if isinstance(from_topic, str) else list(from_topic)
        if not topics or not all(isinstance(t, str) and t for t in topics):
            raise ValueError(f"from_topic must be one or more topic names, got {from_topic!r}")
        if not to_topic or not isinstance(to_topic, str):
            raise ValueError(f"to_topic must name the topic to produce to, got {to_topic!r}")
        if not group:
            raise ValueError("group must name the consumer group")
        if workers is None:
            workers = os.cpu_count() or 1
        for name, count in (("workers", workers), ("sources", sources), ("sinks", sinks),
                            ("max_ready_files", max_ready_files)):
            positive_int(name, count)
        if value not in ("bytes", "json"):
            raise ValueError(f"value must be 'bytes' or 'json', got {value!r}")
        self.function = function
        self.bootstrap_servers, self.topics, self.to_topic, self.group = bootstrap_servers, topics, to_topic, group
        self.workers, self.sources, self.sinks = workers, sources, sinks
        self.config = dict(config or {})
        self.value, self.dead_letter, self.batch = value, dead_letter, batch
        self.max_crashes, self.max_ready_files = max_crashes, max_ready_files
        self.durable = true_or_false("durable", durable)
        self.connect_timeout = float(connect_timeout)
        self.progress = progress
        self.private = folder is None
        self.folder = "" if folder is None else os.path.abspath(os.fspath(folder))
        self._supervisor: Optional[Supervisor] = None
        self._stop_early = False

    @property
    def in_folder(self) -> str:
        return os.path.join(self.folder, IN)

    @property
    def out_folder(self) -> str:
        return os.path.join(self.folder, OUT)

    @property
    def dead_folder(self) -> str:
        return os.path.join(self.folder, DEAD)

    def stop(self) -> None:
        """Stop the pipeline in order (safe in a signal handler and from another thread)."""
        self._stop_early = True
        if self._supervisor is not None:
            self._supervisor.stop()

    def run(self) -> int:
        """Run until SIGTERM, SIGINT or ``stop()``, then stop in order; returns 0 (EXIT_OK).

        KafkaUnavailable when no broker answers, or a topic does not exist, within
        ``connect_timeout``; NetworkFilesystemError for a folder on a network filesystem;
        RuntimeError when another pipeline runs on the folder.
        """
        previous: Dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():  # a stop while it starts is a stop too
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, lambda signum, frame: self.stop())
        try:
            topics = [*self.topics, self.to_topic, *([self.dead_letter] if self.dead_letter else [])]
            log.info("kafka-pipeline: looking for a broker at %s and the topics %s", self.bootstrap_servers,
                     ", ".join(topics))
            check_kafka(self.bootstrap_servers, topics, self.config, self.connect_timeout,
                        stopped=lambda: self._stop_early)
            if not self._stop_early:
                self._run()
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
        return EXIT_OK

    def _run(self) -> None:
        if self.private:
            self.folder = tempfile.mkdtemp(prefix="turbo_queue-pipeline-", dir=_platform.fast_temp_root())
        folders = [self.in_folder, self.out_folder] + ([self.dead_folder] if self.dead_letter else [])
        lock_fd = -1
        try:
            for folder in folders:
                _platform.prepare_folder(folder)
            lock_fd = self._lock()
            for folder in folders:
                recover(folder, durable=self.durable)  # what a pipeline killed on this folder left
            log.info("kafka-pipeline: %s -> %d source(s) -> %s -> %d worker(s) -> %s -> %d sink(s) -> %s",
                     ", ".join(self.topics), self.sources, self.in_folder, self.workers, self.out_folder, self.sinks,
                     self.to_topic)
            progress = None
            show = sys.stderr.isatty() if self.progress is None else self.progress
            if show:
                progress = _Progress(self, sys.stderr)
            supervisor = self._build(progress)
            self._supervisor = supervisor
            if self._stop_early:
                supervisor.stop()
            try:
                supervisor.run()
            finally:
                if progress is not None:
                    progress.end()
        finally:
            if lock_fd >= 0:
                os.close(lock_fd)
            self._supervisor = None
            if self.private:
                self._remove_private_folder()

    # -- inside ----------------------------------------------------------------------------

    def _lock(self) -> int:
        """Hold ``<folder>/.pipeline.lock``: two pipelines on one folder would share its batches by mistake."""
        fd = os.open(os.path.join(self.folder, ".pipeline.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(f"another pipeline runs on {self.folder}; give each pipeline a folder of its own") from None
        return fd

    def _build(self, progress: Optional[_Progress]) -> Supervisor:
        supervisor = Supervisor(tick=progress.tick if progress else None)
        clients = {"bootstrap_servers": self.bootstrap_servers, "config": self.config,
                   "connect_timeout": self.connect_timeout, "durable": self.durable}
        # Stage 0, stopped last: the sinks, once the out-folder (and the dead-letter folder) drained.
        supervisor.add_group(
            "sink", _run_sink, self.sinks, stage=0, stop_timeout=STOP_TIMEOUT, drained=_Drained(self.out_folder),
            args=(self.out_folder, {**clients, "topic": self.to_topic, "dead_letter": self.dead_letter,
                                    "max_crashes": self.max_crashes}),
            on_death=lambda name, code: recover(self.out_folder, durable=self.durable),
        )
        if self.dead_letter:
            supervisor.add_group(
                "dead-letter-sink", _run_sink, 1, stage=0, stop_timeout=STOP_TIMEOUT,
                drained=_Drained(self.dead_folder),
                args=(self.dead_folder, {**clients, "topic": self.dead_letter, "max_crashes": self.max_crashes}),
                on_death=lambda name, code: recover(self.dead_folder, durable=self.durable),
            )
        # Stage 1: the workers, stopped once the in-folder drained.
        worker_settings = {"batch": self.batch, "max_crashes": self.max_crashes, "durable": self.durable,
                           "max_ready_files": self.max_ready_files,
                           "dead_letter_folder": self.dead_folder if self.dead_letter else None}

        def after_worker(name: str, code: int) -> None:
            for folder in (self.in_folder, self.out_folder) + ((self.dead_folder,) if self.dead_letter else ()):
                recover(folder, durable=self.durable)

        supervisor.add_group(
            "worker", _run_worker, self.workers, stage=1, stop_timeout=STOP_TIMEOUT, drained=_Drained(self.in_folder),
            args=(self.in_folder, self.out_folder, self.function, worker_settings), on_death=after_worker,
        )
        # Stage 2, started last and stopped first: the sources.
        supervisor.add_group(
            "source", _run_source, self.sources, stage=2, stop_timeout=STOP_TIMEOUT,
            args=(self.in_folder, {**clients, "topics": self.topics, "group": self.group, "value": self.value,
                                   "dead_letter": self.dead_letter, "max_ready_files": self.max_ready_files}),
            on_death=lambda name, code: recover(self.in_folder, durable=self.durable),
        )
        return supervisor

    def _remove_private_folder(self) -> None:
        folders = [self.in_folder, self.out_folder, self.dead_folder]
        left = sum(_has_batches(folder, _folder.STATES) for folder in folders)
        if left:
            log.warning("kafka-pipeline: kept %s: it holds %d batch(es) not delivered or set aside; "
                        "`turbo-queue pipeline --folder %s ...` delivers them, `turbo-queue peek` shows them",
                        self.folder, left, self.folder)
            return
        shutil.rmtree(self.folder, ignore_errors=True)


__all__ = ["DEAD", "IN", "OUT", "Pipeline", "check_kafka"]
