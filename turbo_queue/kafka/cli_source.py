"""``turbo-queue kafka-source``: consume Kafka topics into a queue folder, at least once."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any, Dict, List

from ._errors import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE

DESCRIPTION = """\
Consumes the topics in a consumer group and puts each message (key, value, headers, timestamp,
topic, partition, offset) into the queue folder, as turbo_queue.kafka.Message items. Offsets are
committed only after the messages are in a handed-over batch; on a rebalance the source hands
over and commits before it lets partitions go. While the folder's backlog is at its limit the
partitions are paused (the backlog waits in Kafka). SIGTERM or SIGINT: hand over, commit, leave
the group, exit 0."""

EPILOG = """\
examples:
  turbo-queue kafka-source /var/queues/events --bootstrap-servers 127.0.0.1:9092 --topic events --group pipeline
  turbo-queue kafka-source /var/queues/events --bootstrap-servers kafka:9093 --topic '^events-.*' --group g \\
      -X security.protocol=SASL_SSL -X sasl.mechanism=PLAIN -X sasl.username=u -X sasl.password=p
  turbo-queue kafka-source /var/queues/events ... --value json --dead-letter events-bad

exit codes:
  0    stopped cleanly (SIGTERM, SIGINT)
  1    the folder could not be written (nothing after the last hand-over was committed)
  2    bad arguments, a network folder, or the kafka extra is missing
  4    no broker answered, or a topic does not exist, within --connect-timeout
  130  Ctrl-C before the source was running
"""


def _setting(text: str) -> "tuple[str, str]":
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (a librdkafka setting), got {text!r}")
    return key.strip(), value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_parser(commands: "argparse._SubParsersAction[Any]", common: argparse.ArgumentParser) -> None:
    """Add the ``kafka-source`` command to ``commands``."""
    p = commands.add_parser("kafka-source", parents=[common], help="consume Kafka topics into a queue folder",
                            description=DESCRIPTION, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", metavar="FOLDER", help="the queue folder to fill")
    p.add_argument("--bootstrap-servers", required=True, metavar="HOST:PORT", help="broker address(es), comma-separated")
    p.add_argument("--topic", action="append", required=True, metavar="T",
                   help="topic to consume (repeat for more; ^regex for a pattern)")
    p.add_argument("--group", required=True, metavar="G", help="the consumer group")
    p.add_argument("-X", dest="config", action="append", type=_setting, default=[], metavar="KEY=VALUE",
                   help="a librdkafka setting, as kcat takes it (repeatable)")
    p.add_argument("--value", choices=["bytes", "json"], default="bytes",
                   help="bytes: the value as it is (default); json: decoded, undecodable ones set aside")
    p.add_argument("--dead-letter", metavar="TOPIC", help="topic for values that do not decode (default: a bad_ batch)")
    p.add_argument("--max-ready-files", type=_positive, default=100, metavar="N",
                   help="pause while N ready_ batches wait (default 100)")
    p.add_argument("--max-ready-items", type=_positive, metavar="N", help="...or while N items wait (default: no limit)")
    p.add_argument("--durable", action="store_true", help="fsync each batch before it is handed over and committed")
    p.add_argument("--connect-timeout", type=_seconds, default=30.0, metavar="S",
                   help="seconds for the broker to answer and the topics to exist (default 30)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the source until SIGTERM or SIGINT; returns the exit code."""
    from .._errors import BatchWriteError, NetworkFilesystemError
    from ._errors import KafkaUnavailable
    from .source import KafkaSource

    config: Dict[str, str] = dict(args.config)
    try:
        source = KafkaSource(
            args.folder, bootstrap_servers=args.bootstrap_servers, topics=args.topic, group=args.group,
            value=args.value, dead_letter=args.dead_letter, max_ready_files=args.max_ready_files,
            max_ready_items=args.max_ready_items, durable=args.durable, connect_timeout=args.connect_timeout,
            config=config,
        )
    except (ValueError, NetworkFilesystemError) as exc:
        print(f"turbo-queue kafka-source: {exc}", file=sys.stderr)
        return EXIT_USAGE

    def stop(signum: int, _frame: object) -> None:
        source.stop()

    previous: List[Any] = [signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)]
    try:
        source.run()
    except KafkaUnavailable as exc:
        print(f"turbo-queue kafka-source: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except ImportError as exc:
        print(f"turbo-queue kafka-source: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BatchWriteError as exc:
        print(f"turbo-queue kafka-source: {exc}; nothing after the last hand-over was committed", file=sys.stderr)
        return EXIT_FAILED
    finally:
        for sig, handler in zip((signal.SIGTERM, signal.SIGINT), previous):
            signal.signal(sig, handler)
    return EXIT_OK
