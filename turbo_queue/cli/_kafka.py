"""What the Kafka commands share: the connection flags, and running a connector until a signal."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any, Callable, List, Sequence, Tuple, Type

from ..kafka._errors import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE


def setting(text: str) -> Tuple[str, str]:
    """An argparse type: one librdkafka ``KEY=VALUE``, as kcat's ``-X`` takes it."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (a librdkafka setting), got {text!r}")
    return key.strip(), value


def positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def add_connection(p: argparse.ArgumentParser) -> None:
    """``--bootstrap-servers``, ``-X`` and ``--connect-timeout``, the same in every Kafka command."""
    p.add_argument("--bootstrap-servers", required=True, metavar="HOST:PORT", help="broker address(es), comma-separated")
    p.add_argument("-X", dest="config", action="append", type=setting, default=[], metavar="KEY=VALUE",
                   help="a librdkafka setting, as kcat takes it (repeatable)")
    p.add_argument("--connect-timeout", type=positive_seconds, default=30.0, metavar="S",
                   help="seconds for the broker to answer and the topics to exist (default 30)")


#: What a command says and returns for an error of a connector's run: (error classes, exit code, note).
Failure = Tuple[Tuple[Type[BaseException], ...], int, str]


def run_until_stopped(command: str, make: Callable[[], Any], failures: Sequence[Failure] = ()) -> int:
    """Make a connector, run it until SIGTERM or SIGINT (which stop it cleanly), return the exit code.

    A bad setting (ValueError, NetworkFilesystemError) or a missing extra exits 2, no broker or
    topic (``KafkaUnavailable``) 4; ``failures`` names the connector's own.
    """
    from .._errors import NetworkFilesystemError
    from ..kafka._errors import KafkaUnavailable

    def say(exc: BaseException, note: str = "") -> None:
        print(f"turbo-queue {command}: {exc}{note}", file=sys.stderr)

    try:
        connector = make()
    except (ImportError, ValueError, NetworkFilesystemError) as exc:
        say(exc)
        return EXIT_USAGE

    def stop(signum: int, _frame: object) -> None:
        connector.stop()

    signals = (signal.SIGTERM, signal.SIGINT)
    previous: List[Any] = [signal.signal(sig, stop) for sig in signals]
    try:
        connector.run()
    except KafkaUnavailable as exc:
        say(exc)
        return EXIT_UNAVAILABLE
    except (ImportError, ValueError, NetworkFilesystemError) as exc:
        say(exc)
        return EXIT_USAGE
    except BaseException as exc:
        for kinds, code, note in failures:
            if isinstance(exc, kinds):
                say(exc, note)
                return code
        raise
    finally:
        for sig, handler in zip(signals, previous):
            signal.signal(sig, handler)
    return EXIT_OK
