"""The benchmark runs end to end on tiny numbers (it is not a test of speed: no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple


TOOL = Path(__file__).resolve().parent.parent / "tools" / "bench.py"


def run_bench(tmp_path, *args: str) -> Tuple[str, dict]:
    """Run tools/bench.py with ``args`` on tiny numbers; its output and its JSON results."""
    out = tmp_path / "results.json"
    result = subprocess.run([sys.executable, str(TOOL), *args, "--json", str(out), "--tmp", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout, json.loads(out.read_text())


def assert_every_item_counted(rows: List[dict], items: int) -> None:
    for row in rows:
        assert row["items"] == items and row["lost"] == 0 and row["duplicated"] == 0
        assert row["items_per_s"] > 0 and row["cpu_us_per_item"] > 0 and row["peak_mb"] > 0


def test_the_benchmark_runs_and_checks_every_item(tmp_path):
    stdout, results = run_bench(tmp_path, "--items", "3000", "--sweep", "1,2", "--only", "mp,mp-lists,turbo,turbo-many")
    assert "| P=C | contender | items/s | CPU us/item | peak MB | lost | duplicated |" in stdout
    medians = results["medians"]
    assert len(medians) == 8
    assert {row["contender"] for row in medians} == {
        "multiprocessing.Queue", "multiprocessing.Queue, lists of 100", "turbo_queue.Queue",
        "turbo_queue.Queue, put_many/get_many"}
    assert_every_item_counted(medians, 3000)


def test_turbo_queue_bench_is_the_same_benchmark(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "turbo_queue", "bench", "--items", "2000", "--sweep", "1", "--only", "turbo",
         "--tmp", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "| 1 | turbo_queue.Queue |" in result.stdout


def test_the_zmq_rows_finish_and_count_every_item(tmp_path):
    import zmq  # noqa: F401  (the test extra installs pyzmq)

    _, results = run_bench(tmp_path, "--items", "3000", "--sweep", "1,2,8", "--only", "zmq,zmq-lists")
    assert results["timeouts"] == [] and len(results["medians"]) == 6
    assert_every_item_counted(results["medians"], 3000)
