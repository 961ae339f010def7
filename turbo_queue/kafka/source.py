"""``KafkaSource``: consume Kafka topics in a consumer group into a queue folder, at least once.

Offsets are never committed automatically. The source puts each message into the folder's
current batch, and every ``commit_interval`` seconds (or ``batch_size`` messages) it hands the
batch over (``Enqueuer.flush()``: renamed ``ready_``, after its fsyncs with ``durable``) and only
then commits, synchronously, the offset after the last message of each partition in it. So a
committed offset never runs ahead of what is in the folder: a source killed at any moment loses
nothing, and the next owner of its partitions delivers again what it had not committed.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import orjson

from .. import Enqueuer, _platform, set_aside
from .._checks import positive_number, true_or_false
from .._status import COUNTS, SOURCE
from ._errors import describe, import_confluent_kafka, wait_for_topics
from .message import Message
from .status import remove_status, write_status

log = logging.getLogger("turbo_queue.kafka")

PathLike = Union[str, "os.PathLike[str]"]
TopicPartition = Tuple[str, int]

#: The source's settings and their defaults (keyword arguments of KafkaSource).
DEFAULTS: Dict[str, Any] = {
    "value": "bytes",  # "bytes": the value as the broker has it; "json": decoded (a bad one is set aside)
    "item": "message",  # "message": each item is a Message; "value": the value alone (key, headers, origin dropped)
    "dead_letter": None,  # topic for values that do not decode; None: a bad_ batch in the folder
    "max_ready_files": 100,  # pause the partitions while this many ready_ batches wait (None: no limit)
    "max_ready_items": None,  # ...or while this many items wait in ready_/chosen_ batches (None: no limit)
    "batch_size": 10_000,  # hand over and commit after this many messages at most
    "commit_interval": 1.0,  # ...or after this many seconds at most
    "durable": False,  # fsync each batch before it is handed over (and so before the commit)
    "connect_timeout": 30.0,  # seconds for a broker to answer and the topics to exist, at start
    "status_interval": 1.0,  # seconds between rewrites of the status file
    "allow_network_fs": False,
    "config": None,  # librdkafka settings, passed as they are (TLS, SASL, session.timeout.ms, ...)
}

#: librdkafka settings the source depends on: ``config`` may not change them.
REQUIRED = {"enable.auto.commit": False, "enable.auto.offset.store": False}
#: librdkafka settings the source starts from; ``config`` overrides them.
CONSUMER_DEFAULTS = {"auto.offset.reset": "earliest"}
#: The codec of the source's batches: pickle, with Messages stored as plain tuples.
MESSAGE_CODEC = "kafka-message"
#: ``Message`` of a tuple of all its fields, in C: ``Message(...)`` runs its ``__new__`` in Python (~1 us).
_new_message = functools.partial(tuple.__new__, Message)
#: A batch size the Enqueuer never reaches.
_NEVER = 2**62
#: Seconds after which the Enqueuer's timer hands a batch over if the source has not (it is stuck).
_BACKSTOP = 60.0
#: Messages taken from the client per call.
POLL_MESSAGES = 1000
#: Header names the dead-letter topic adds to a message that could not be decoded.
REASON_HEADER = "turbo_queue.reason"
ORIGIN_HEADER = "turbo_queue.origin"
#: Consumer settings that a producer (of the dead-letter topic) must not be given.
_CONSUMER_ONLY = (
    "group.", "auto.offset.reset", "enable.auto.", "session.timeout.ms", "heartbeat.interval.ms",
    "max.poll.interval.ms", "partition.assignment.strategy", "isolation.level", "fetch.", "queued.",
    "auto.commit.", "enable.partition.eof", "check.crcs", "allow.auto.create.topics", "consume.",
)


class _ClientLog:
    """librdkafka's log lines, into ``logging``: a failed connection only at INFO.

    librdkafka repeats those at every reconnection attempt; the source itself warns when it
    waits for a broker (at most every ``_QUIET`` seconds).
    """

    def log(self, level: int, fmt: str, *args: Any) -> None:
        if args and args[0] == "FAIL" and level > logging.INFO:
            level = logging.INFO
        log.log(level, fmt, *args)


_client_log = _ClientLog()
#: Seconds between two warnings that the broker is away.
_QUIET = 30.0


class KafkaSource:
    """Consumes ``topics`` in consumer group ``group`` and puts each message into ``folder``.

    Each item is a :class:`Message` (key, value, headers, timestamp, topic, partition, offset),
    in the ``kafka-message`` codec (pickle, Messages stored as plain tuples; a plain ``Dequeuer`` gives
    back Messages); with ``item="value"``, the message's value alone. ``topics`` may hold regular expressions (``"^events-.*"``) as
    confluent-kafka allows. The settings and their defaults are in ``DEFAULTS``; ``config`` passes
    any librdkafka setting (it may not turn on automatic commits). ``run()`` consumes until
    ``stop()`` (from another thread or a signal handler), then hands over, commits and leaves the
    group. Raises ValueError for a bad setting, NetworkFilesystemError for a folder on a network
    filesystem (unless ``allow_network_fs``); the folder is made if missing.
    """

    def __init__(self, folder: PathLike, *, bootstrap_servers: str, topics: Union[str, Sequence[str]], group: str,
                 **settings: Any) -> None:
        unknown = sorted(set(settings) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"unknown KafkaSource setting(s): {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
        merged = {**DEFAULTS, **settings}
        self.folder = os.path.abspath(os.fspath(folder))
        self.bootstrap_servers = bootstrap_servers
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.group = group
        if not bootstrap_servers:
            raise ValueError("bootstrap_servers must name at least one broker, as HOST:PORT")
        if not self.topics or not all(isinstance(t, str) and t for t in self.topics):
            raise ValueError(f"topics must be one or more topic names, got {topics!r}")
        if not group:
            raise ValueError("group must name the consumer group")
        if merged["value"] not in ("bytes", "json"):
            raise ValueError(f"value must be 'bytes' or 'json', got {merged['value']!r}")
        if merged["item"] not in ("message", "value"):
            raise ValueError(f"item must be 'message' or 'value', got {merged['item']!r}")
        for name in ("connect_timeout", "commit_interval", "status_interval"):
            positive_number(name, merged[name])
        for name in ("max_ready_files", "max_ready_items"):
            if merged[name] is not None and (isinstance(merged[name], bool) or not isinstance(merged[name], int)
                                             or merged[name] < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {merged[name]!r}")
        for name in ("durable", "allow_network_fs"):
            true_or_false(name, merged[name])
        Enqueuer.check_settings(batch_size=merged["batch_size"])
        config = dict(merged["config"] or {})
        for key, required in REQUIRED.items():
            if key in config and str(config[key]).lower() != str(required).lower():
                raise ValueError(f"{key}={config[key]} is not allowed: the source commits offsets itself, "
                                 f"only after the messages are handed over")
        self.settings = merged
        _platform.prepare_folder(self.folder, merged["allow_network_fs"])  # NetworkFilesystemError here
        self.config: Dict[str, Any] = {**CONSUMER_DEFAULTS, **config, **REQUIRED,
                                       "bootstrap.servers": bootstrap_servers, "group.id": group}
        self._stopping = False
        self._reset()

    def _reset(self) -> None:
        """The state of one run(): a supervisor may run a source again after it returned."""
        self._consumer: Any = None
        self._producer: Any = None
        self._enqueuer: Optional[Enqueuer] = None
        self._assigned: Set[TopicPartition] = set()
        self._put_upto: Dict[TopicPartition, int] = {}  # offset after the last message put
        self._uncommitted: Dict[TopicPartition, int] = {}  # offsets to commit after the next hand-over
        self._committed: Dict[TopicPartition, int] = {}
        # For the status only: the group's committed offset (None: none) of the partitions this
        # source has taken nothing from yet, asked of the broker once per assignment.
        self._group_committed: Dict[TopicPartition, Optional[int]] = {}
        self._since_commit = 0
        self._dead_pending: List[Message] = []  # sent to the dead-letter topic, not yet confirmed
        self._dead_failed: List[Tuple[Message, str]] = []
        self._broken: Optional[BaseException] = None  # a hand-over failed: never commit again
        self._paused = False
        self._next_away_warning = 0.0
        self.counts = dict.fromkeys(COUNTS[SOURCE], 0)  # written into the status file

    # -- the public calls ------------------------------------------------------------------

    def stop(self) -> None:
        """Make ``run()`` hand over, commit, leave the group and return (safe from a signal handler)."""
        self._stopping = True

    def run(self) -> None:
        """Consume until ``stop()``.

        Raises KafkaUnavailable when no broker answers or a named topic does not exist within
        ``connect_timeout``; ImportError without confluent-kafka; BatchWriteError when the
        folder cannot be written (nothing after the last hand-over was committed);
        NetworkFilesystemError for a folder on a network filesystem.
        """
        ck = import_confluent_kafka()
        self._reset()
        # The source hands over itself (every batch_size messages or commit_interval seconds), and
        # commits right after: the Enqueuer never rolls on size, its timer only after _BACKSTOP
        # seconds (a hand-over long before its commit would widen what a kill delivers twice),
        # and a put never waits for room, since polling must go on.
        enqueuer = Enqueuer(self.folder, batch_size=_NEVER,
                            max_batch_delay=max(_BACKSTOP, 2 * self.settings["commit_interval"]),
                            max_ready_files=self.settings["max_ready_files"], durable=self.settings["durable"],
                            allow_network_fs=self.settings["allow_network_fs"], codec=MESSAGE_CODEC)
        self._enqueuer = enqueuer
        consumer = ck.Consumer(self.config, logger=_client_log)
        self._consumer = consumer
        started = time.time()
        try:
            self._check_topics(consumer, ck)
            if self.settings["dead_letter"]:
                self._producer = ck.Producer(self._producer_config(), logger=_client_log)
            consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                               on_lost=self._on_lost)
            log.info("kafka-source: consuming %s as group %s from %s into %s", ", ".join(self.topics), self.group,
                     self.bootstrap_servers, self.folder)
            next_commit = time.monotonic() + self.settings["commit_interval"]
            next_look = next_status = 0.0
            while not self._stopping:
                messages = consumer.consume(POLL_MESSAGES, 0.2)
                self._take(messages, ck)
                now = time.monotonic()
                due = now >= next_commit and (self._since_commit or self._uncommitted)  # new, or a failed commit
                if self._since_commit >= self.settings["batch_size"] or due:
                    self._hand_over_and_commit()
                    next_commit = now + self.settings["commit_interval"]
                elif now >= next_commit:
                    next_commit = now + self.settings["commit_interval"]
                if now >= next_look:
                    self._apply_backpressure()
                    next_look = now + 0.1
                if now >= next_status:
                    self._write_status(started)
                    next_status = now + self.settings["status_interval"]
            self._hand_over_and_commit(final=True)
        finally:
            try:
                consumer.close()  # leaves the group now (revocation hands over and commits first)
            finally:
                self._consumer = None
                if self._producer is not None:
                    self._producer.flush(self.settings["connect_timeout"])
                    self._producer = None
                try:
                    enqueuer.close()
                finally:
                    self._enqueuer = None
                    self._stopping = False  # a later run() runs again
                    remove_status(self.folder, "source")
        if self._broken is not None:
            raise self._broken

    # -- inside ----------------------------------------------------------------------------

    def _producer_config(self) -> Dict[str, Any]:
        config = {k: v for k, v in self.config.items() if not k.startswith(_CONSUMER_ONLY) and k not in REQUIRED}
        config.update({"acks": "all", "enable.idempotence": True})
        return config

    def _check_topics(self, consumer: Any, ck: Any) -> None:
        """KafkaUnavailable unless a broker answers and each named topic exists, within connect_timeout."""
        named = [t for t in self.topics if not t.startswith("^")]
        wait_for_topics(consumer, self.bootstrap_servers, named, float(self.settings["connect_timeout"]),
                        "the source", lambda: self._stopping, ck)

    def _take(self, messages: List[Any], ck: Any) -> None:
        """Put the messages into the current batch (and set aside those that do not decode)."""
        if not messages:
            return
        items: List[Any] = []
        append = items.append
        decode = self.settings["value"] == "json"
        values_only = self.settings["item"] == "value"
        no_timestamp = ck.TIMESTAMP_NOT_AVAILABLE
        new_message = _new_message
        assigned, put_upto = self._assigned, self._put_upto
        # The offset after the last message taken, per partition: written into _put_upto and
        # _uncommitted once per poll (a poll's messages of one partition come in offset order).
        upto: Dict[TopicPartition, int] = {}
        where: Optional[TopicPartition] = None
        floor = -1  # offsets below this one (of partition ``where``) came already
        took = 0
        for m in messages:
            if m.error() is not None:
                self._client_error(m.error(), ck)
                continue
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            if where is None or partition != where[1] or topic != where[0]:
                where = (topic, partition)
                # A message of a partition given up meanwhile is the next owner's to deliver; one
                # below what this source put already came again after a reassignment.
                floor = upto.get(where, put_upto.get(where, -1)) if where in assigned else _NEVER
            if offset < floor:
                continue
            floor = offset + 1
            upto[where] = floor
            took += 1
            kind, stamp = m.timestamp()
            value = m.value()
            if decode and value is not None:
                try:
                    value = orjson.loads(value)
                except orjson.JSONDecodeError as exc:
                    self._bad_value(Message(value, m.key(), m.headers(), stamp if kind != no_timestamp else None,
                                            topic, partition, offset),
                                    f"the value of {topic} [{partition}] at offset {offset} is not JSON: {exc}")
                    continue
            if values_only:
                append(value)
            else:
                append(new_message((value, m.key(), m.headers(), stamp if kind != no_timestamp else None, topic,
                                    partition, offset)))
        put_upto.update(upto)
        self._uncommitted.update(upto)
        self._since_commit += took
        self.counts["messages_in"] += took
        if items:
            assert self._enqueuer is not None
            try:
                self._enqueuer.put_many(items)
            except BaseException as exc:
                self._fail(exc)
                raise

    def _client_error(self, error: Any, ck: Any) -> None:
        if error.fatal():
            raise ck.KafkaException(error)
        if error.code() in (ck.KafkaError._TRANSPORT, ck.KafkaError._ALL_BROKERS_DOWN):
            now = time.monotonic()
            if now >= self._next_away_warning:
                log.warning("kafka-source: %s; waiting for the broker to come back", error.str())
                self._next_away_warning = now + _QUIET
        elif error.code() != ck.KafkaError._PARTITION_EOF:
            log.error("kafka-source: %s", error.str())

    def _bad_value(self, message: Message, reason: str) -> None:
        """A value that does not decode: to the dead-letter topic, else a bad_ batch; never dropped."""
        if self._producer is None:
            name = set_aside(self.folder, [message], reason, durable=self.settings["durable"],
                             allow_network_fs=self.settings["allow_network_fs"])
            self.counts["set_aside"] += 1
            log.warning("kafka-source: %s; set aside in %s", reason, name)
            return
        headers = list(message.headers or []) + [
            (REASON_HEADER, reason.encode()),
            (ORIGIN_HEADER, f"{message.topic}/{message.partition}/{message.offset}".encode()),
        ]
        self._dead_pending.append(message)

        def report(error: Any, _record: Any, message: Message = message) -> None:
            self._dead_pending.remove(message)
            if error is None:
                self.counts["dead_lettered"] += 1
            else:
                self._dead_failed.append((message, f"{reason}; the dead-letter topic refused it: {error.str()}"))

        while True:
            try:
                self._producer.produce(self.settings["dead_letter"], message.value, message.key, headers=headers,
                                       timestamp=message.timestamp or 0, on_delivery=report)
                break
            except BufferError:
                self._producer.poll(0.1)
        self._producer.poll(0)

    def _confirm_dead_letters(self, timeout: float) -> bool:
        """Wait for the dead-letter topic to confirm what was sent; set aside what it refused.

        False when some are still unconfirmed (the broker is away): nothing may be committed then.
        """
        if self._producer is None:
            return True
        if self._dead_pending:
            self._producer.flush(timeout)
        while self._dead_failed:
            message, reason = self._dead_failed.pop()
            name = set_aside(self.folder, [message], reason, durable=self.settings["durable"],
                             allow_network_fs=self.settings["allow_network_fs"])
            self.counts["set_aside"] += 1
            log.warning("kafka-source: %s; set aside in %s", reason, name)
        return not self._dead_pending

    def _hand_over_and_commit(self, partitions: Optional[Set[TopicPartition]] = None, final: bool = False) -> None:
        """Hand the current batch over, then commit the offsets after it (of ``partitions``, or all)."""
        if self._broken is not None or self._enqueuer is None:
            return
        try:
            self._enqueuer.flush()
        except BaseException as exc:
            self._fail(exc)
            raise
        self._since_commit = 0
        timeout = self.settings["connect_timeout"] if final else 5.0
        if not self._confirm_dead_letters(timeout):
            log.warning("kafka-source: the dead-letter topic has not confirmed %d message(s); not committing yet",
                        len(self._dead_pending))
            return
        offsets = {tp: o for tp, o in self._uncommitted.items() if partitions is None or tp in partitions}
        if offsets:
            self._commit(offsets)

    def _fail(self, exc: BaseException) -> None:
        # A batch was not handed over (disk full?): its messages are not in the folder, so no
        # offset may be committed from now on; they come again from the last commit.
        self._broken = exc
        self._stopping = True

    def _commit(self, offsets: Dict[TopicPartition, int]) -> None:
        ck = import_confluent_kafka()
        try:
            self._consumer.commit(offsets=[ck.TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                  asynchronous=False)
        except ck.KafkaException as exc:
            # Retried with the next hand-over; the messages are in the folder, so a source that
            # dies meanwhile only delivers them again.
            log.warning("kafka-source: commit failed (%s); trying again after the next hand-over", describe(exc))
            return
        for tp, offset in offsets.items():
            self._committed[tp] = offset
            if self._uncommitted.get(tp) == offset:
                del self._uncommitted[tp]
        self.counts["commits"] += 1

    def _on_assign(self, consumer: Any, partitions: List[Any]) -> None:
        self._assigned.update((p.topic, p.partition) for p in partitions)
        log.info("kafka-source: assigned %s", _names(partitions))
        if self._paused:
            # New partitions start unpaused, and they are not assigned until this returns: the next
            # look at the backlog (within 0.1 s) pauses the whole assignment again.
            self._paused = False

    def _on_revoke(self, consumer: Any, partitions: List[Any]) -> None:
        # Before the partitions go: hand over what this source holds and commit it, so that the
        # next owner starts right after it (no duplicate).
        revoked = {(p.topic, p.partition) for p in partitions}
        log.info("kafka-source: revoked %s; handing over and committing first", _names(partitions))
        try:
            self._hand_over_and_commit(revoked)
        finally:
            self._forget(revoked)

    def _on_lost(self, consumer: Any, partitions: List[Any]) -> None:
        # The group has already given them to another source: a commit would be refused. Hand
        # over what this source holds anyway; the other delivers it again (duplicates, no loss).
        lost = {(p.topic, p.partition) for p in partitions}
        log.warning("kafka-source: lost %s (session timed out?); their uncommitted messages will come again",
                    _names(partitions))
        try:
            if self._enqueuer is not None and self._broken is None:
                try:
                    self._enqueuer.flush()
                except BaseException as exc:
                    self._fail(exc)
                    raise
        finally:
            self._forget(lost)

    def _forget(self, partitions: Set[TopicPartition]) -> None:
        self._assigned -= partitions
        for tp in partitions:
            self._uncommitted.pop(tp, None)
            self._committed.pop(tp, None)
            self._group_committed.pop(tp, None)

    def _backlog_full(self) -> bool:
        assert self._enqueuer is not None
        if not self._enqueuer.active:  # max_ready_files ready_ batches wait
            return True
        limit_items = self.settings["max_ready_items"]
        if limit_items is not None:
            from ..monitor import snapshot

            return bool(snapshot(self.folder).backlog_items >= limit_items)
        return False

    def _apply_backpressure(self) -> None:
        """Pause every assigned partition while the backlog is at its limit; resume below it.

        Paused, the source keeps polling (it stays in the group), fetches nothing, and the
        backlog waits in Kafka.
        """
        full = self._backlog_full()
        if full == self._paused:
            return
        consumer = self._consumer
        assignment = consumer.assignment()
        if full:
            self._hand_over_and_commit()
            consumer.pause(assignment)
            self.counts["pauses"] += 1
            log.info("kafka-source: the folder's backlog is at its limit; paused %d partition(s)", len(assignment))
        else:
            consumer.resume(assignment)
            log.info("kafka-source: consumers caught up; resumed %d partition(s)", len(assignment))
        self._paused = full

    def _write_status(self, started: float) -> None:
        ck = import_confluent_kafka()
        unknown = [tp for tp in sorted(self._assigned)
                   if tp not in self._committed and tp not in self._put_upto and tp not in self._group_committed]
        if unknown:
            self._ask_group_committed(unknown, ck)
        from_start = str(self.config.get("auto.offset.reset")).lower() in ("earliest", "smallest", "beginning")
        partitions = []
        for topic, partition in sorted(self._assigned):
            tp = ck.TopicPartition(topic, partition)
            low: Optional[int]
            high: Optional[int]
            try:
                # Paused partitions are not fetched, so the cached watermark would stand still.
                low, high = self._consumer.get_watermark_offsets(tp, timeout=0.5, cached=not self._paused)
            except ck.KafkaException:
                low = high = None
            low = None if low is None or low < 0 else low
            high = None if high is None or high < 0 else high
            committed = self._committed.get((topic, partition), self._group_committed.get((topic, partition)))
            done = committed if committed is not None else self._put_upto.get((topic, partition))
            if done is None and from_start and (topic, partition) in self._group_committed:
                done = low  # nothing taken, nothing ever committed: the group starts at the beginning
            partitions.append({
                "topic": topic, "partition": partition, "committed": committed, "high_watermark": high,
                "lag": None if high is None or done is None else max(high - done, 0), "paused": self._paused,
            })
        write_status(self.folder, "source", {
            "bootstrap_servers": self.bootstrap_servers, "group": self.group, "topics": self.topics,
            "started": started, "updated": time.time(), "paused": self._paused, "partitions": partitions,
            **self.counts,
        })

    def _ask_group_committed(self, partitions: List[TopicPartition], ck: Any) -> None:
        """For the status: the group's committed offsets of ``partitions`` (an earlier owner's), so
        that the lag of a partition this source has not read from yet is known."""
        try:
            found = self._consumer.committed([ck.TopicPartition(t, p) for t, p in partitions], timeout=0.5)
        except ck.KafkaException:
            return  # asked again at the next status
        for tp in found:
            if tp.error is None:
                self._group_committed[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else None


def _names(partitions: List[Any]) -> str:
    return ", ".join(f"{p.topic} [{p.partition}]" for p in partitions) or "nothing"
