"""The peak memory of a consumer of large items (README, Settings: ``chunk_bytes``).

A producer process puts ``--items`` bytes items of ``--size`` bytes into a queue folder, then a
consumer process gets them all; each prints its peak resident memory (``ru_maxrss``). Compare
with ``multiprocessing.Queue`` by ``--contender mp``.

    python tools/large_items.py --items 300 --size 1000000 [--chunk-bytes N] [--contender mp]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import tempfile
import time
from typing import Any, Dict


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _produce(queue: Any, items: int, size: int, report: Any) -> None:
    for i in range(items):
        queue.put(i.to_bytes(8, "little") * (size // 8))
    if hasattr(queue, "flush"):
        queue.flush()
    queue.put(None)
    if hasattr(queue, "flush"):
        queue.flush()
    report.put(("producer", _peak_mb()))


def _consume(queue: Any, report: Any) -> None:
    got = 0
    while queue.get() is not None:
        got += 1
    report.put(("consumer", _peak_mb(), got))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--chunk-size", type=int, default=100)
    parser.add_argument("--chunk-bytes", type=int, default=None, help="default: the Queue's default")
    parser.add_argument("--contender", choices=("turbo", "mp"), default="turbo")
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")  # a fresh process: its peak is its own
    report = ctx.Queue()
    if args.contender == "mp":
        queue: Any = ctx.Queue()
    else:
        import turbo_queue

        settings: Dict[str, Any] = {"chunk_size": args.chunk_size}
        if args.chunk_bytes is not None:
            settings["chunk_bytes"] = args.chunk_bytes
        queue = turbo_queue.Queue(path=tempfile.mkdtemp(prefix="large_items-", dir="/dev/shm"), **settings)
    started = time.monotonic()
    consumer = ctx.Process(target=_consume, args=(queue, report))
    producer = ctx.Process(target=_produce, args=(queue, args.items, args.size, report))
    consumer.start()
    producer.start()
    results = [report.get() for _ in range(2)]
    producer.join()
    consumer.join()
    elapsed = time.monotonic() - started
    for result in sorted(results):
        extra = f", {result[2]} items" if len(result) > 2 else ""
        print(f"{args.contender} {result[0]}: peak {result[1]:.0f} MB{extra}")
    print(f"{args.items} items of {args.size:,} bytes in {elapsed:.2f} s")
    if args.contender == "turbo":
        import shutil

        shutil.rmtree(queue.path, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
