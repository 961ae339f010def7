"""``Worker``: runs a user's function over the Messages of one folder, into another, acknowledging after hand-over.

The pipeline's middle: a source fills the in-folder with :class:`Message` items, workers call the
function on them and put what it returns into the out-folder, and a sink produces that. A worker
acknowledges its input (``Dequeuer(auto_ack=False)``) only after the outputs made from it were
handed over (``Enqueuer.flush()``), so a worker killed at any moment loses nothing: what it had
not acknowledged is delivered again, to it or another worker.
"""

from __future__ import annotations

import logging
import os
import queue
import time
import types
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import orjson

from .. import _folder
from .._aside import set_aside
from .._checks import true_or_false
from ..consumer import Dequeuer
from ..producer import Enqueuer
from .message import Message

log = logging.getLogger("turbo_queue.kafka")

PathLike = Union[str, "os.PathLike[str]"]

#: Header names of a message the function failed on (as the source's dead letters carry).
ERROR_HEADER = "turbo_queue.reason"
ORIGIN_HEADER = "turbo_queue.origin"
#: The attribute that ``batched`` sets on a function.
BATCH_MARKER = "turbo_queue_batch"
#: A round (outputs handed over, then inputs acknowledged) lasts about ROUND_SECONDS, and at most
#: ROUND_ITEMS messages: longer rounds make fewer, larger batch files; shorter ones stop sooner.
#: While input waits, a round goes on until it holds ROUND_MIN_ITEMS messages (up to
#: ROUND_MAX_SECONDS): a batch file costs ~0.9 ms of CPU, ~15 us per message in a round of 60.
ROUND_SECONDS = 0.05
ROUND_ITEMS = 5000
ROUND_MIN_ITEMS = 500
ROUND_MAX_SECONDS = 0.5
#: The codec of the out-folder's batches: pickle, with Messages stored as plain tuples (read back as Messages).
MESSAGE_CODEC = "kafka-message"
#: Value types an output keeps as they are.
_AS_IS = (bytes, str)


def batched(function: Callable[..., Any]) -> Callable[..., Any]:
    """Mark ``function`` as one that takes a list of Messages (as ``--batch`` does); returns it."""
    setattr(function, BATCH_MARKER, True)
    return function


def is_batched(function: Callable[..., Any]) -> bool:
    return bool(getattr(function, BATCH_MARKER, False))


class _Unusable(Exception):
    """An output that cannot be produced: not bytes, str, JSON or a Message of those."""


def _value(value: Any) -> Any:
    if value is None or isinstance(value, (bytes, str)):
        return value
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        raise _Unusable(f"the function returned a value of type {type(value).__qualname__}, which is not bytes, "
                        f"str or JSON ({exc})") from None


def _output(item: Any) -> Any:
    """What goes into the out-folder for one output: a Message or bytes/str, JSON encoded here.

    Encoding here, in the workers, spares the sink (one process) that work.
    """
    if isinstance(item, Message):
        value = _value(item.value)
        return item if value is item.value else item._replace(value=value)
    return _value(item)


def outputs(returned: Any) -> List[Any]:
    """The outputs in what a function returned: None, one output, or several (a list, tuple or generator)."""
    if returned is None:
        return []
    if isinstance(returned, Message) or not isinstance(returned, (list, tuple, types.GeneratorType)):
        return [_output(returned)]
    return [_output(item) for item in returned if item is not None]


def _reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return f"the function raised {text}"


def _dead_letter(message: Any, reason: str) -> Any:
    """``message`` with the error attached: its headers plus the reason and where it came from."""
    if not isinstance(message, Message):
        return message
    headers = list(message.headers or []) + [
        (ERROR_HEADER, reason.encode()),
        (ORIGIN_HEADER, f"{message.topic}/{message.partition}/{message.offset}".encode()),
    ]
    return message._replace(headers=headers)


class Worker:
    """Calls ``function`` on each item of ``in_folder`` and puts what it returns into ``out_folder``.

    ``function`` gets one :class:`Message` and returns None (nothing), one output or several (a
    list, tuple or generator); an output is bytes, str, anything JSON-able, or a Message (key,
    headers, timestamp as given). With ``batch`` (default: whether ``function`` is marked with
    :func:`batched`) it gets a list of Messages and returns the outputs for all of them.

    A message whose call raises (or returns something that cannot be produced) goes, with the
    error in its headers, to ``dead_letter_folder`` (a folder a sink produces to the dead-letter
    topic) when given, else into a ``bad_`` batch of ``in_folder`` whose reason names the error; the
    worker goes on. In batch form a failed call sets aside the whole list. While ``max_ready_files``
    batches wait in ``out_folder``, the worker waits (backpressure, down to the sources). A worker that dies
    (a segfault, an OOM kill) leaves its input unacknowledged: after ``max_crashes`` deaths at one
    message, the Dequeuer sets it aside. ``run()`` works until ``stop()``.
    """

    def __init__(self, in_folder: PathLike, out_folder: PathLike, function: Callable[..., Any], *,
                 batch: Optional[bool] = None, dead_letter_folder: Optional[PathLike] = None, max_crashes: int = 3,
                 durable: bool = False, max_ready_files: Optional[int] = None) -> None:
        if not callable(function):
            raise ValueError(f"function must be callable, got {function!r}")
        self.in_folder = os.path.abspath(os.fspath(in_folder))
        self.out_folder = os.path.abspath(os.fspath(out_folder))
        self.dead_letter_folder = None if dead_letter_folder is None else os.path.abspath(os.fspath(dead_letter_folder))
        self.function = function
        self.batch = is_batched(function) if batch is None else bool(batch)
        self.max_crashes, self.max_ready_files = max_crashes, max_ready_files
        self.durable = true_or_false("durable", durable)
        Enqueuer.check_settings(max_ready_files=max_ready_files)
        self._stopping = False
        self.counts: Dict[str, int] = {"messages_in": 0, "messages_out": 0, "failed": 0}

    def stop(self) -> None:
        """Make ``run()`` finish its round (hand over, acknowledge) and return; safe in a signal handler."""
        self._stopping = True

    def run(self) -> None:
        """Work until ``stop()``; each round hands its outputs over before it acknowledges its input."""
        dequeuer = Dequeuer(self.in_folder, auto_ack=False, max_crashes=self.max_crashes, durable=self.durable,
                            recover_every=5.0)
        # Rounds roll the batches (flush); the size and delay only bound a round that runs long.
        enqueuer = Enqueuer(self.out_folder, batch_size=ROUND_ITEMS * 4, max_batch_delay=1.0,
                            max_ready_files=self.max_ready_files, durable=self.durable, codec=MESSAGE_CODEC)
        dead = None if self.dead_letter_folder is None else Enqueuer(self.dead_letter_folder, durable=self.durable,
                                                                     codec=MESSAGE_CODEC)
        per_message = 0.0001  # seconds the function takes per message, measured as it runs
        try:
            while not self._stopping:
                if self.max_ready_files is not None and _folder.count_ready(self.out_folder) >= self.max_ready_files:
                    time.sleep(0.02)  # the sinks are behind: wait, and the in-folder's backlog makes the sources pause
                    continue
                started = time.monotonic()
                taken = 0
                failed: List[Tuple[Any, str]] = []
                while taken < ROUND_ITEMS and not self._stopping:
                    # One call's messages take about ROUND_SECONDS: a slow function still stops soon.
                    want = max(1, min(1000, int(ROUND_SECONDS / per_message)))
                    try:
                        if taken == 0:
                            messages = dequeuer.get_many(want, timeout=0.2)
                        else:
                            messages = dequeuer.get_many(want, block=False)
                    except queue.Empty:
                        break
                    begun = time.monotonic()
                    self._work(messages, enqueuer, failed)
                    spent = (time.monotonic() - begun) / len(messages)
                    per_message = 0.8 * per_message + 0.2 * max(spent, 1e-7)
                    taken += len(messages)
                    elapsed = time.monotonic() - started
                    if elapsed >= ROUND_MAX_SECONDS or (elapsed >= ROUND_SECONDS and taken >= ROUND_MIN_ITEMS):
                        break
                if not taken:
                    continue
                enqueuer.flush()
                if failed:
                    self._keep_failed(failed, dead)
                dequeuer.ack()
                self.counts["messages_in"] += taken
        finally:
            try:
                enqueuer.close()
                if dead is not None:
                    dead.close()
            finally:
                dequeuer.close()  # hands back what was not acknowledged (nothing after a clean stop)

    def _work(self, messages: List[Any], enqueuer: Enqueuer, failed: List[Tuple[Any, str]]) -> None:
        function = self.function
        if self.batch:
            try:
                out = outputs(function(messages))
            except Exception as exc:  # the user's code: any error sets the messages aside
                failed.extend((message, _reason(exc)) for message in messages)
                return
            if out:
                enqueuer.put_many(out)
                self.counts["messages_out"] += len(out)
            return
        # One put_many for the outputs of all the messages: each call writes a chunk of its own
        # into the batch file, and chunks of one item cost the worker and the sink several times more.
        made: List[Any] = []
        append = made.append
        for message in messages:
            try:
                returned = function(message)
                # The common case, a Message whose value needs no encoding, without a call.
                if type(returned) is Message and (returned.value is None or type(returned.value) in _AS_IS):
                    append(returned)
                else:
                    made.extend(outputs(returned))
            except Exception as exc:  # the user's code: any error sets the message aside
                failed.append((message, _reason(exc)))
        if made:
            enqueuer.put_many(made)
            self.counts["messages_out"] += len(made)

    def _keep_failed(self, failed: List[Tuple[Any, str]], dead: Optional[Enqueuer]) -> None:
        """The messages the function failed on, with their errors: to the dead-letter folder, else set aside."""
        self.counts["failed"] += len(failed)
        first = failed[0][1]
        if len(failed) == 1:
            log.warning("kafka-worker: %s", first)
        else:
            log.warning("kafka-worker: %s (and %d more messages failed)", first, len(failed) - 1)
        items = [_dead_letter(message, reason) for message, reason in failed]
        if dead is not None:
            dead.put_many(items)
            dead.flush()
            return
        by_reason: Dict[str, List[Any]] = {}
        for item, (_, reason) in zip(items, failed):
            by_reason.setdefault(reason, []).append(item)
        for reason, same in by_reason.items():
            name = set_aside(self.in_folder, same, reason, durable=self.durable)
            log.warning("kafka-worker: %d message(s) set aside in %s: %s", len(same), name, reason)

