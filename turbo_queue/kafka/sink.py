"""``KafkaSink``: produce the items of a queue folder to a Kafka topic, at least once.

The sink takes items with ``Dequeuer(auto_ack=False)``, produces them, and acknowledges them only
once the broker has confirmed every message produced from them (delivery reports; ``acks=all``
and the idempotent producer by default). So a sink killed at any moment loses nothing: the next
sink produces again what it had not acknowledged, at most ``max_in_flight`` items.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import time
from typing import Any, Dict, List, Optional, Set, Tuple, Union

import orjson

from .. import _platform, set_aside
from .._checks import positive_int, positive_number, true_or_false
from .._status import COUNTS, SINK
from ..consumer import Dequeuer
from ._errors import describe, import_confluent_kafka, wait_for_topics
from .message import Message
from .status import remove_status, write_status

log = logging.getLogger("turbo_queue.kafka")

PathLike = Union[str, "os.PathLike[str]"]

#: The sink's settings and their defaults (keyword arguments of KafkaSink).
DEFAULTS: Dict[str, Any] = {
    "dead_letter": None,  # topic for messages the broker refuses for good; None: a bad_ batch in the folder
    "partition": None,  # produce every message to this partition; None: chosen from the key
    "value": "auto",  # "auto": bytes and str as they are, anything else as JSON; "json": every value as JSON
    "max_in_flight": 10_000,  # items taken, produced and not yet acknowledged, at most
    "connect_timeout": 30.0,  # seconds for a broker to answer and the topics to exist, at start
    "stop_timeout": 30.0,  # at a stop, seconds for the broker to confirm what is in flight
    "status_interval": 1.0,  # seconds between rewrites of the status file
    "max_crashes": 3,  # as Dequeuer(max_crashes): sinks that died at one item before it is set aside
    "durable": False,
    "allow_network_fs": False,
    "config": None,  # librdkafka settings, passed as they are (TLS, SASL, linger.ms, ...)
}

#: librdkafka settings the sink starts from; ``config`` overrides them.
PRODUCER_DEFAULTS = {"acks": "all", "enable.idempotence": True, "linger.ms": 5}
#: Header names added to a message sent to the dead-letter topic.
REASON_HEADER = "turbo_queue.reason"
TOPIC_HEADER = "turbo_queue.topic"
#: Seconds between two warnings that the broker is away, and before a failed message is produced again.
_QUIET = 30.0
_RETRY_AFTER = 0.5
#: librdkafka's default batch.size, in bytes.
_BATCH_SIZE = 1_000_000
#: Value and key types produced as they are.
_AS_IS = (bytes, str)


class _ClientLog:
    """librdkafka's log lines, into ``logging``: a failed connection only at INFO (it repeats them)."""

    def log(self, level: int, fmt: str, *args: Any) -> None:
        if args and args[0] == "FAIL" and level > logging.INFO:
            level = logging.INFO
        log.log(level, fmt, *args)


_client_log = _ClientLog()


class _Refused(Exception):
    """An item that cannot become a Kafka message (its value, key or headers are of no usable type)."""


def _bytes(data: Any) -> Any:
    """A key or value as librdkafka sends it: a str as UTF-8."""
    return data.encode() if isinstance(data, str) else data


def _first_each(noted: List[Tuple[int, str]]) -> List[Tuple[int, str]]:
    """``noted`` in order, each index once (with its first reason)."""
    first: Dict[int, str] = {}
    for index, reason in noted:
        first.setdefault(index, reason)
    return list(first.items())


def _record(item: Any, as_json: bool = False) -> Tuple[Any, Any, Any, int]:
    """``(value, key, headers, timestamp)`` to produce from an item; _Refused if it cannot be.

    With ``as_json`` every value is JSON-encoded, a str and None too (bytes are refused).
    """
    if isinstance(item, Message):
        value, key, headers, timestamp = item.value, item.key, item.headers, item.timestamp or 0
    else:
        value, key, headers, timestamp = item, None, None, 0
    if as_json or (value is not None and not isinstance(value, (bytes, str))):
        try:
            value = orjson.dumps(value)
        except TypeError as exc:
            raise _Refused(f"its value of type {type(value).__qualname__} is not bytes, str or JSON ({exc})") from None
    if key is not None and not isinstance(key, (bytes, str)):
        raise _Refused(f"its key of type {type(key).__qualname__} is not bytes or str")
    if not isinstance(timestamp, int):
        raise _Refused(f"its timestamp {timestamp!r} is not an int (milliseconds since the epoch)")
    return value, key, headers, timestamp


class _Round:
    """The items taken since the last ``ack()`` and what the broker said about each (by index)."""

    def __init__(self) -> None:
        self.items: List[Any] = []
        self.pending = 0  # produced, no delivery report yet
        self.retry: List[int] = []  # to produce again after a pause (a transient error)
        self.refused: List[Tuple[int, str]] = []  # refused for good: to the dead-letter topic, or kept
        self.dead_retry: List[Tuple[int, str]] = []  # to send to the dead-letter topic again after a pause
        self.keep: List[Tuple[int, str]] = []  # to keep in a bad_ batch, with the reason
        self.alone: List[int] = []  # in a batch the broker found too large: to produce again one by one
        self.tried_alone: Set[int] = set()
        # The one delivery callback of the round's messages (a closure per message costs ~2 us):
        # a failed message is found again by its key and value (``sent_as``).
        self.report: Any = None
        self.sent_as: Dict[Tuple[Any, Any], List[int]] = {}  # (key, value) as bytes: the items produced so
        self.mapped = 0  # items[:mapped] are in sent_as
        self.lost_track = False  # a failed message matched no item: hand the whole round back


class KafkaSink:
    """Takes the items of ``folder`` and produces them to ``topic``; acknowledges only delivered ones.

    An item is a :class:`Message` (key, headers and timestamp produced as given; ``topic``,
    ``partition`` and ``offset`` of where it came from are ignored) or a plain value: bytes and str
    as they are, anything else as JSON (orjson); with ``value="json"`` every value as JSON. The partition is chosen from the key unless the
    ``partition`` setting names one. A message the broker refuses for good (too large, say) goes
    to the ``dead_letter`` topic with the reason in a header, or else into a ``bad_`` batch of the
    folder with the reason (``set_aside``); the sink goes on. Settings and defaults: ``DEFAULTS``;
    ``config`` passes any librdkafka setting. ``run()`` produces until ``stop()``. Raises
    ValueError for a bad setting, NetworkFilesystemError for a folder on a network filesystem.
    """

    def __init__(self, folder: PathLike, *, bootstrap_servers: str, topic: str, **settings: Any) -> None:
        unknown = sorted(set(settings) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"unknown KafkaSink setting(s): {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
        merged = {**DEFAULTS, **settings}
        if not bootstrap_servers:
            raise ValueError("bootstrap_servers must name at least one broker, as HOST:PORT")
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"topic must name the topic to produce to, got {topic!r}")
        if merged["dead_letter"] is not None and (not isinstance(merged["dead_letter"], str) or not merged["dead_letter"]):
            raise ValueError(f"dead_letter must name a topic or be None, got {merged['dead_letter']!r}")
        if merged["dead_letter"] == topic:
            raise ValueError("dead_letter must be another topic than the one produced to")
        if merged["value"] not in ("auto", "json"):
            raise ValueError(f"value must be 'auto' or 'json', got {merged['value']!r}")
        partition = merged["partition"]
        if partition is not None and (isinstance(partition, bool) or not isinstance(partition, int) or partition < 0):
            raise ValueError(f"partition must be a partition number (0 or more) or None, got {partition!r}")
        for name in ("connect_timeout", "stop_timeout", "status_interval"):
            positive_number(name, merged[name])
        for name in ("max_in_flight", "max_crashes"):
            positive_int(name, merged[name])
        for name in ("durable", "allow_network_fs"):
            true_or_false(name, merged[name])
        self.folder = os.path.abspath(os.fspath(folder))
        _platform.prepare_folder(self.folder, merged["allow_network_fs"])  # a network folder: refused now
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.settings = merged
        self._as_json = merged["value"] == "json"
        self.config: Dict[str, Any] = {**PRODUCER_DEFAULTS, **dict(merged["config"] or {}),
                                       "bootstrap.servers": bootstrap_servers}
        self._stopping = False
        self._producer: Any = None
        self._dequeuer: Optional[Dequeuer] = None
        self._round = _Round()
        self._ck: Any = None
        self._fatal: Any = None  # a fatal error of the producer, seen in a delivery report
        self._too_large: Tuple[int, ...] = ()
        self._started = 0.0
        self._next_away_warning = 0.0
        self._last_error: Optional[str] = None
        self.counts = dict.fromkeys(COUNTS[SINK], 0)  # written into the status file

    # -- the public calls ------------------------------------------------------------------

    def stop(self) -> None:
        """Make ``run()`` deliver what is in flight, acknowledge it and return (safe from a signal handler)."""
        self._stopping = True

    @property
    def in_flight(self) -> int:
        """Items taken from the folder and not yet acknowledged."""
        return len(self._round.items)

    def run(self) -> None:
        """Produce the folder's items until ``stop()``.

        Raises KafkaUnavailable when no broker answers or a topic does not exist within
        ``connect_timeout``; ImportError without confluent-kafka; NetworkFilesystemError for a
        folder on a network filesystem. However it ends, items the broker has not confirmed are
        handed back to the folder, never acknowledged.
        """
        ck = import_confluent_kafka()
        self._ck = ck
        self._started = time.time()
        self._producer = ck.Producer(self.config, logger=_client_log)
        dequeuer: Optional[Dequeuer] = None
        try:
            self._too_large = (ck.KafkaError.MSG_SIZE_TOO_LARGE, ck.KafkaError.RECORD_LIST_TOO_LARGE)
            self._check_topics(self._producer, ck)
            if self._stopping:  # while it waited for the broker
                return
            self._fit_batches(ck)
            dequeuer = Dequeuer(self.folder, auto_ack=False, max_crashes=self.settings["max_crashes"],
                                durable=self.settings["durable"], allow_network_fs=self.settings["allow_network_fs"])
            self._dequeuer = dequeuer
            log.info("kafka-sink: producing the items of %s to %s at %s", self.folder, self.topic,
                     self.bootstrap_servers)
            next_status = 0.0
            while not self._stopping:
                self._fill(dequeuer)
                if self._round.items:
                    self._settle()
                now = time.monotonic()
                if now >= next_status:
                    self._write_status()
                    next_status = now + self.settings["status_interval"]
        finally:
            self._stopping = False  # a later run() runs again
            try:
                if dequeuer is not None:
                    dequeuer.close()  # hands back what was not acknowledged (nothing, after a clean stop)
            finally:
                self._round = _Round()
                self._dequeuer = None
                self._producer.purge()  # what is left was handed back: it must not reach the topic later
                self._producer.flush(0)
                self._producer = None
                remove_status(self.folder, "sink")

    # -- inside ----------------------------------------------------------------------------

    def _check_topics(self, producer: Any, ck: Any) -> None:
        """KafkaUnavailable unless a broker answers and the topics exist, within connect_timeout."""
        named = [self.topic] + ([self.settings["dead_letter"]] if self.settings["dead_letter"] else [])
        metadata = wait_for_topics(producer, self.bootstrap_servers, named, float(self.settings["connect_timeout"]),
                                   "the sink", lambda: self._stopping, ck)
        if metadata is None:
            return  # stopped while it waited: run() then ends at once
        partitions = len(metadata.topics[self.topic].partitions)
        chosen = self.settings["partition"]
        if chosen is not None and chosen >= partitions:
            raise ValueError(f"partition {chosen} does not exist: topic {self.topic!r} has {partitions}")

    def _fit_batches(self, ck: Any) -> None:
        """Keep the producer's record batches within the topic's ``max.message.bytes``.

        The broker refuses a whole batch larger than that, good messages with the bad. Unless
        ``config`` sets ``batch.size``, it is lowered to the topic's limit, so that only a message
        too large by itself is refused. When the limit cannot be read (no right to describe the
        topic), batches stay as they are: a refused batch is then produced again message by message.
        """
        if "batch.size" in (self.settings["config"] or {}):
            return
        # Re-exported by confluent_kafka.admin at run time, but not declared so in its type information.
        from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType  # type: ignore[attr-defined]

        admin = AdminClient({k: v for k, v in self.config.items() if k not in PRODUCER_DEFAULTS},
                            logger=_client_log)
        try:
            resource = ConfigResource(ResourceType.TOPIC, self.topic)
            entries = admin.describe_configs([resource])[resource].result(self.settings["connect_timeout"])
            limit = int(entries["max.message.bytes"].value)
        except (ck.KafkaException, KeyError, ValueError, TypeError) as exc:
            log.info("kafka-sink: cannot read max.message.bytes of %s (%s); batches keep their size", self.topic, exc)
            return
        if limit < _BATCH_SIZE:
            self.config["batch.size"] = limit
            self._producer.flush(0)
            self._producer = ck.Producer(self.config, logger=_client_log)

    def _fill(self, dequeuer: Dequeuer) -> None:
        """Take items (waiting a little for the first) and produce them, up to ``max_in_flight``."""
        room = self.settings["max_in_flight"]
        wait: Optional[float] = 0.2
        while room > 0 and not self._stopping:
            try:
                items = dequeuer.get_many(room, block=wait is not None, timeout=wait)
            except queue.Empty:
                return
            wait = None  # then only what is there at once: the next call claims another batch
            round_ = self._round
            first = len(round_.items)
            round_.items.extend(items)
            self.counts["taken"] += len(items)
            room -= len(items)
            self._produce_many(first, items)
            self._producer.poll(0)

    def _produce_many(self, first: int, items: List[Any]) -> None:
        """Produce ``items``, the round's items from index ``first`` on, as ``_produce`` does each.

        A Message of bytes or str (or None) with an int timestamp goes straight to the producer;
        anything else, and any refusal (a full queue too), takes ``_produce``'s careful way.
        """
        round_ = self._round
        report = self._round_report(round_)
        if self._as_json or self.settings["partition"] is not None:
            for index in range(first, first + len(items)):
                self._produce(index)
            return
        produce, topic, message = self._producer.produce, self.topic, Message
        for index, item in enumerate(items, first):
            if type(item) is message:
                value, key, headers, timestamp = item[0], item[1], item[2], item[3]
                if ((value is None or type(value) in _AS_IS) and (key is None or type(key) in _AS_IS)
                        and (timestamp is None or type(timestamp) is int)):
                    try:
                        produce(topic, value, key, headers=headers, timestamp=timestamp or 0, on_delivery=report)
                        round_.pending += 1
                        continue
                    except Exception:  # BufferError, KafkaException, TypeError...: as _produce handles them
                        pass
            self._produce(index)

    def _round_report(self, round_: _Round) -> Any:
        if round_.report is None:
            round_.report = functools.partial(self._report, round_)
        return round_.report

    def _produce(self, index: int) -> None:
        """Produce item ``index`` of the round; a refused one is noted for the dead-letter topic or a bad_ batch."""
        round_, ck = self._round, self._ck
        item = round_.items[index]
        try:
            value, key, headers, timestamp = _record(item, self._as_json)
        except _Refused as exc:
            round_.refused.append((index, f"it cannot be produced: {exc}"))
            return
        partition = self.settings["partition"]
        extra = {} if partition is None else {"partition": partition}
        while True:
            try:
                self._producer.produce(self.topic, value, key, headers=headers, timestamp=timestamp,
                                       on_delivery=self._round_report(round_), **extra)
                round_.pending += 1
                return
            except BufferError:  # librdkafka's queue is full: let it send, then try again
                self._producer.poll(0.1)
            except ck.KafkaException as exc:  # refused before it was sent (larger than message.max.bytes...)
                round_.refused.append((index, f"the producer refused it: {describe(exc)}"))
                return
            except (TypeError, ValueError) as exc:  # headers of a shape confluent-kafka does not take
                round_.refused.append((index, f"it cannot be produced: {exc}"))
                return

    def _report(self, round_: _Round, error: Any, message: Any) -> None:
        """The delivery report of a message of ``round_`` (librdkafka calls it once per message)."""
        round_.pending -= 1
        if error is None:
            self.counts["delivered"] += 1
            return
        if error.fatal():
            self._fatal = error
            return
        indexes = self._sent_as(round_, message)
        if not indexes:
            round_.lost_track = True
            log.error("kafka-sink: a delivery report (%s) matches no message produced; handing the round's items "
                      "back, to be produced again", error.str())
            return
        # Items of the same key and value cannot be told apart in a report: each of them is taken
        # for the failed one (produced again, or sent on), which makes duplicates, never a loss.
        too_large, transient = error.code() in self._too_large, self._transient(error)
        for index in indexes:
            if too_large and index not in round_.tried_alone:
                # The broker judges a whole record batch: a message of the right size may have
                # been refused with a larger neighbour. Alone, it shows which it was.
                round_.alone.append(index)
            elif transient:
                round_.retry.append(index)
            else:
                round_.refused.append((index, f"the broker refused it: {error.str()}"))
        if transient or not too_large or any(index in round_.tried_alone for index in indexes):
            self._note_error(error.str(), away=transient)

    def _sent_as(self, round_: _Round, message: Any) -> List[int]:
        """The indexes of the round's items produced with the key and value of a delivery report's ``message``."""
        items, as_json = round_.items, self._as_json
        for index in range(round_.mapped, len(items)):
            try:
                value, key, _, _ = _record(items[index], as_json)
            except _Refused:
                continue
            round_.sent_as.setdefault((_bytes(key), _bytes(value)), []).append(index)
        round_.mapped = len(items)
        return round_.sent_as.get((message.key(), message.value()), [])

    def _transient(self, error: Any) -> bool:
        """Whether a delivery error may pass (broker away, leader moving, timed out): produce it again."""
        ck = self._ck.KafkaError
        return bool(error.retriable()) or error.code() in (
            ck._MSG_TIMED_OUT, ck._TIMED_OUT, ck._TRANSPORT, ck._ALL_BROKERS_DOWN, ck._PURGE_QUEUE,
            ck._PURGE_INFLIGHT, ck.REQUEST_TIMED_OUT, ck.NOT_ENOUGH_REPLICAS, ck.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
            ck.LEADER_NOT_AVAILABLE, ck.NOT_LEADER_FOR_PARTITION, ck.NETWORK_EXCEPTION, ck.KAFKA_STORAGE_ERROR,
            ck.OUT_OF_ORDER_SEQUENCE_NUMBER, ck._TIMED_OUT_QUEUE, ck._NODE_UPDATE,
        )

    def _note_error(self, text: str, away: bool = False) -> None:
        self.counts["errors"] += 1
        self._last_error = text
        now = time.monotonic()
        if not away:
            log.error("kafka-sink: %s", text)
        elif now >= self._next_away_warning:
            log.warning("kafka-sink: %s; producing it again once the broker answers", text)
            self._next_away_warning = now + _QUIET

    def _settle(self) -> None:
        """Wait until every item of the round is delivered, dead-lettered or set aside; then ``ack()``.

        What failed with a transient error is produced again after a pause, for as long as it
        takes (the broker may be away for long). After ``stop()`` the broker has ``stop_timeout``
        seconds: what it has not confirmed by then is handed back to the folder instead.
        """
        round_, producer, dequeuer = self._round, self._producer, self._dequeuer
        assert dequeuer is not None
        deadline: Optional[float] = None
        next_status = time.monotonic() + self.settings["status_interval"]
        while True:
            producer.poll(0.1)
            if self._fatal is not None:
                self._replace_producer()
                dequeuer.nack()
                self._round = _Round()
                return
            if round_.pending == 0:
                if round_.lost_track:
                    dequeuer.nack()
                    self._round = _Round()
                    return
                if round_.retry or round_.dead_retry:
                    time.sleep(_RETRY_AFTER)
                    again, round_.retry = list(dict.fromkeys(round_.retry)), []
                    dead_again, round_.dead_retry = round_.dead_retry, []
                    self.counts["retried"] += len(again) + len(dead_again)
                    for index in again:
                        self._produce(index)
                    for index, reason in dead_again:
                        self._dead_letter(index, reason)
                    continue
                if round_.alone:
                    self._produce_alone(round_)
                    continue
                if round_.refused:
                    refused, round_.refused = _first_each(round_.refused), []
                    for index, reason in refused:
                        self._dead_letter(index, reason)
                    continue
                if round_.keep:
                    self._keep(round_)
                    continue
                break
            now = time.monotonic()
            if self._stopping and deadline is None:
                deadline = now + self.settings["stop_timeout"]
            if deadline is not None and now >= deadline:
                unconfirmed = round_.pending + len(round_.retry) + len(round_.dead_retry)
                log.warning("kafka-sink: the broker has not confirmed %d message(s) within the stop timeout; "
                            "handing their items back to the folder (they will be produced again)", unconfirmed)
                dequeuer.nack()
                self._round = _Round()
                return
            if now >= next_status:
                self._write_status()
                next_status = now + self.settings["status_interval"]
        dequeuer.ack()
        self.counts["acks"] += 1
        self._round = _Round()

    def _produce_alone(self, round_: _Round) -> None:
        """Produce each message of a batch the broker found too large in a batch of its own."""
        alone, round_.alone = list(dict.fromkeys(round_.alone)), []
        for index in alone:
            round_.tried_alone.add(index)
            self._produce(index)
            while round_.pending and self._fatal is None:
                self._producer.flush(0.5)

    def _dead_letter(self, index: int, reason: str) -> None:
        """Produce item ``index`` to the dead-letter topic, ``reason`` in a header; else keep it in a bad_ batch."""
        round_, ck = self._round, self._ck
        dead_letter = self.settings["dead_letter"]
        if dead_letter is None:
            round_.keep.append((index, reason))
            return
        try:
            value, key, headers, timestamp = _record(round_.items[index], self._as_json)
        except _Refused:  # nothing a topic can take
            round_.keep.append((index, reason))
            return
        headers = list(headers or []) + [(REASON_HEADER, reason.encode()), (TOPIC_HEADER, self.topic.encode())]

        def report(error: Any, _message: Any) -> None:
            round_.pending -= 1
            if error is None:
                self.counts["dead_lettered"] += 1
            elif error.fatal():
                self._fatal = error
            elif self._transient(error):
                round_.dead_retry.append((index, reason))
                self._note_error(error.str(), away=True)
            else:
                round_.keep.append((index, f"{reason}; the dead-letter topic {dead_letter} refused it too: "
                                          f"{error.str()}"))

        while True:
            try:
                self._producer.produce(dead_letter, value, key, headers=headers, timestamp=timestamp,
                                       on_delivery=report)
                round_.pending += 1
                return
            except BufferError:
                self._producer.poll(0.1)
            except (ck.KafkaException, TypeError, ValueError) as exc:
                round_.keep.append((index, f"{reason}; the dead-letter topic {dead_letter} refused it too: "
                                          f"{describe(exc)}"))
                return

    def _keep(self, round_: _Round) -> None:
        """Keep the items refused for good in ``bad_`` batches, one per reason (``set_aside``)."""
        by_reason: Dict[str, List[Any]] = {}
        for index, reason in round_.keep:
            by_reason.setdefault(reason, []).append(round_.items[index])
        round_.keep = []
        for reason, items in by_reason.items():
            name = set_aside(self.folder, items, f"{self.topic}: {reason}", durable=self.settings["durable"],
                             allow_network_fs=self.settings["allow_network_fs"])
            self.counts["set_aside"] += len(items)
            log.warning("kafka-sink: %d message(s) for %s not delivered (%s); kept in %s", len(items), self.topic,
                        reason, name)

    def _replace_producer(self) -> None:
        """After a fatal producer error: a new producer; the round's items are handed back and taken again."""
        assert self._fatal is not None
        log.error("kafka-sink: the producer failed for good (%s); starting a new one, and producing again what "
                  "was not acknowledged", self._fatal.str())
        self._last_error, self._fatal = self._fatal.str(), None
        self.counts["errors"] += 1
        old = self._producer
        old.purge()
        old.flush(0)
        self._producer = self._ck.Producer(self.config, logger=_client_log)

    def _write_status(self) -> None:
        write_status(self.folder, "sink", {
            "bootstrap_servers": self.bootstrap_servers, "topic": self.topic,
            "dead_letter": self.settings["dead_letter"], "started": self._started,
            "updated": time.time(), "in_flight": self.in_flight, "last_error": self._last_error, **self.counts,
        })


