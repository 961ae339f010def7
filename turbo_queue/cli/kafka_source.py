"""``turbo-queue kafka-source``: consume Kafka topics into a queue folder, at least once."""

from __future__ import annotations

import argparse
from typing import Any

from ..kafka._errors import EXIT_FAILED
from ._args import positive_int
from ._kafka import add_connection, run_until_stopped

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


def add_parser(commands: "argparse._SubParsersAction[Any]", common: argparse.ArgumentParser) -> None:
    """Add the ``kafka-source`` command to ``commands``."""
    p = commands.add_parser("kafka-source", parents=[common], help="consume Kafka topics into a queue folder",
                            description=DESCRIPTION, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", metavar="FOLDER", help="the queue folder to fill")
    add_connection(p)
    p.add_argument("--topic", action="append", required=True, metavar="T",
                   help="topic to consume (repeat for more; ^regex for a pattern)")
    p.add_argument("--group", required=True, metavar="G", help="the consumer group")
    p.add_argument("--value", choices=["bytes", "json"], default="bytes",
                   help="bytes: the value as it is (default); json: decoded, undecodable ones set aside")
    p.add_argument("--dead-letter", metavar="TOPIC", help="topic for values that do not decode (default: a bad_ batch)")
    p.add_argument("--max-ready-files", type=positive_int, default=100, metavar="N",
                   help="pause while N ready_ batches wait (default 100)")
    p.add_argument("--max-ready-items", type=positive_int, metavar="N", help="...or while N items wait (default: no limit)")
    p.add_argument("--durable", action="store_true", help="fsync each batch before it is handed over and committed")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the source until SIGTERM or SIGINT; returns the exit code."""
    from .._errors import BatchWriteError
    from ..kafka.source import KafkaSource

    def make() -> KafkaSource:
        return KafkaSource(
            args.folder, bootstrap_servers=args.bootstrap_servers, topics=args.topic, group=args.group,
            value=args.value, dead_letter=args.dead_letter, max_ready_files=args.max_ready_files,
            max_ready_items=args.max_ready_items, durable=args.durable, connect_timeout=args.connect_timeout,
            config=dict(args.config),
        )

    return run_until_stopped("kafka-source", make, [
        ((BatchWriteError,), EXIT_FAILED, "; nothing after the last hand-over was committed"),
    ])
