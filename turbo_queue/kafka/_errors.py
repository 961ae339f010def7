"""The Kafka connectors' error and their commands' exit codes."""

from __future__ import annotations

from typing import Any, Tuple

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

    def __init__(self, message: str, bootstrap: str = "", topic: "str | None" = None) -> None:
        super().__init__(message)
        self.bootstrap = bootstrap
        self.topic = topic

    def __reduce__(self) -> Tuple[Any, ...]:  # keep the attributes when the error crosses a process boundary
        return type(self), (str(self), self.bootstrap, self.topic)


def import_confluent_kafka() -> Any:
    """The ``confluent_kafka`` module; ImportError saying what to install when it is missing."""
    try:
        import confluent_kafka
    except ImportError as exc:
        raise ImportError(f"the Kafka connectors need confluent-kafka: {INSTALL_HINT}") from exc
    return confluent_kafka
