"""The Kafka connectors' error, their commands' exit codes, and waiting for the broker at start."""

from __future__ import annotations

import time
from types import ModuleType
from typing import Any, Callable, List, Optional, Tuple

from .._errors import TurboQueueError

#: Exit codes of ``turbo-queue kafka-source`` and ``kafka-sink``.
EXIT_OK = 0  #: a clean stop, SIGTERM and SIGINT included
EXIT_FAILED = 1  #: the folder could not be written (disk full, I/O error)
EXIT_USAGE = 2  #: bad arguments
EXIT_UNAVAILABLE = 4  #: no broker answered, or a topic does not exist, within --connect-timeout
EXIT_INTERRUPTED = 130  #: a plain Ctrl-C interrupted something that is not a clean stop

#: What to install when confluent-kafka is missing.
INSTALL_HINT = "pip install 'turbo-queue[kafka]'"


class KafkaUnavailable(TurboQueueError, ConnectionError):
    """No Kafka broker answered at ``bootstrap``, or ``topic`` does not exist there, in time.

    ``bootstrap`` is the address tried; ``topic`` the missing topic (None when no broker answered).
    """

    def __init__(self, message: str, bootstrap: str = "", topic: Optional[str] = None) -> None:
        super().__init__(message)
        self.bootstrap = bootstrap
        self.topic = topic

    def __reduce__(self) -> Tuple[Any, Tuple[str, str, Optional[str]]]:  # keep the attributes across processes
        return type(self), (str(self), self.bootstrap, self.topic)


def import_confluent_kafka() -> ModuleType:
    """The ``confluent_kafka`` module; ImportError saying what to install when it is missing."""
    try:
        import confluent_kafka
    except ImportError as exc:
        raise ImportError(f"the Kafka connectors need confluent-kafka: {INSTALL_HINT}") from exc
    return confluent_kafka


def describe(exc: BaseException) -> str:
    """A KafkaException's error text (its KafkaError's str()), or the exception's."""
    error = exc.args[0] if exc.args else exc
    return str(error.str()) if hasattr(error, "str") else str(error)


def wait_for_topics(client: Any, bootstrap: str, topics: List[str], timeout: float, who: str,
                    stopping: Callable[[], bool], ck: Any) -> Optional[Any]:
    """The cluster's metadata once a broker answers ``client`` and every one of ``topics`` exists.

    Asks for all topics, not one by name (asking by name may create it), a second at a time, so
    that ``stopping()`` is seen while no broker answers: None then. KafkaUnavailable naming the
    address or the missing topic after ``timeout`` seconds. ``who`` (the source, the sink) says
    in the message which connector does not create topics.
    """
    deadline = time.monotonic() + timeout
    while not stopping():
        remaining = deadline - time.monotonic()
        if hasattr(client, "poll"):
            client.poll(0)  # a producer's: serves librdkafka's log lines while it waits
        try:
            metadata = client.list_topics(timeout=min(max(remaining, 0.1), 1.0))
        except ck.KafkaException as exc:
            if time.monotonic() < deadline:
                time.sleep(0.2)  # refused at once: ask again soon, not in a busy loop
                continue
            raise KafkaUnavailable(
                f"no Kafka broker answered at {bootstrap} within {timeout:g} s ({describe(exc)}): "
                f"is it running, is the address right, do -X security settings match it?",
                bootstrap,
            ) from None
        missing = [t for t in topics if t not in metadata.topics or metadata.topics[t].error is not None]
        if not missing:
            return metadata
        if time.monotonic() >= deadline:
            raise KafkaUnavailable(
                f"topic {missing[0]!r} does not exist at {bootstrap} (waited {timeout:g} s): "
                f"create it first; {who} does not create topics",
                bootstrap, missing[0],
            )
        time.sleep(min(0.5, max(deadline - time.monotonic(), 0)))
    return None
