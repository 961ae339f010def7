"""``turbo-queue kafka-sink``: produce the items of a queue folder to a Kafka topic, at least once."""

from __future__ import annotations

import argparse
from typing import Any

from ..kafka._errors import EXIT_FAILED
from ._kafka import add_connection, positive_seconds, run_until_stopped

DESCRIPTION = """\
Takes the items of the queue folder and produces them to the topic: turbo_queue.kafka.Message
items with their key, headers and timestamp, plain values as they are (bytes, str) or as JSON.
Items are acknowledged only once the broker has confirmed every message made from them
(acks=all, the idempotent producer), so a sink killed at any moment loses nothing and produces
again at most what it had not acknowledged. A message the broker refuses for good goes to the
dead-letter topic, or else into a bad_ batch of the folder with the reason. SIGTERM or SIGINT:
deliver what is in flight, acknowledge, exit 0."""

EPILOG = """\
examples:
  turbo-queue kafka-sink /var/queues/results --bootstrap-servers 127.0.0.1:9092 --topic results
  turbo-queue kafka-sink /var/queues/results --bootstrap-servers kafka:9093 --topic results \\
      -X security.protocol=SASL_SSL -X sasl.mechanism=PLAIN -X sasl.username=u -X sasl.password=p
  turbo-queue kafka-sink /var/queues/results ... --dead-letter results-refused -X linger.ms=20

exit codes:
  0    stopped cleanly (SIGTERM, SIGINT)
  1    a refused message could not be set aside in FOLDER (disk full); what was not acknowledged was handed back
  2    bad arguments, a partition that does not exist, a network folder, or the kafka extra is missing
  4    no broker answered, or a topic does not exist, within --connect-timeout
  130  Ctrl-C before the sink was running
"""


def _count(text: str, least: int = 1) -> int:
    value = int(text)
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
    return value


def add_parser(commands: "argparse._SubParsersAction[Any]", common: argparse.ArgumentParser) -> None:
    """Add the ``kafka-sink`` command to ``commands``."""
    p = commands.add_parser("kafka-sink", parents=[common], help="produce the items of a queue folder to a Kafka topic",
                            description=DESCRIPTION, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", metavar="FOLDER", help="the queue folder to take items from")
    add_connection(p)
    p.add_argument("--topic", required=True, metavar="T", help="the topic to produce to")
    p.add_argument("--dead-letter", metavar="TOPIC",
                   help="topic for messages the broker refuses for good (default: a bad_ batch in FOLDER)")
    p.add_argument("--partition", type=lambda text: _count(text, 0), metavar="N",
                   help="produce every message to partition N (default: chosen from the key)")
    p.add_argument("--max-in-flight", type=_count, default=10_000, metavar="N",
                   help="items produced and not yet acknowledged, at most (default 10000): the most a killed "
                        "sink produces again")
    p.add_argument("--durable", action="store_true", help="fsync what the sink writes into the folder")
    p.add_argument("--stop-timeout", type=positive_seconds, default=30.0, metavar="S",
                   help="at SIGTERM/SIGINT, seconds for the broker to confirm what is in flight; what it has not "
                        "confirmed then is handed back to FOLDER (default 30)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the sink until SIGTERM or SIGINT; returns the exit code."""
    import sqlite3

    from ..kafka.sink import KafkaSink

    def make() -> KafkaSink:
        return KafkaSink(
            args.folder, bootstrap_servers=args.bootstrap_servers, topic=args.topic, dead_letter=args.dead_letter,
            partition=args.partition, max_in_flight=args.max_in_flight, durable=args.durable,
            connect_timeout=args.connect_timeout, stop_timeout=args.stop_timeout, config=dict(args.config),
        )

    return run_until_stopped("kafka-sink", make, [  # writing a bad_ batch failed
        ((OSError, sqlite3.Error), EXIT_FAILED, "; what was not acknowledged was handed back to the folder"),
    ])
