"""The benchmark runs end to end on tiny numbers (it is not a test of speed: no timing is asserted)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Tuple

import pytest


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
        cpu = row["cpu_s"]  # where the CPU went: the parts add up to the children's whole
        assert cpu["producer_main"] > 0 and cpu["consumer_main"] > 0
        assert min(cpu.values()) > -0.01  # clocks of 1 us to 1 ms granularity
        assert abs(sum(cpu.values()) - row["cpu_us_per_item"] * items / 1e6) < 0.01


def test_the_benchmark_runs_and_checks_every_item(tmp_path):
    stdout, results = run_bench(tmp_path, "--items", "3000", "--sweep", "1,2", "--only", "mp,mp-lists,turbo,turbo-many")
    assert "| P=C | contender | items/s | CPU us/item | peak MB | lost | duplicated |" in stdout
    medians = results["medians"]
    assert len(medians) == 8
    assert {row["contender"] for row in medians} == {
        "multiprocessing.Queue", "multiprocessing.Queue, lists of 100", "turbo_queue.Queue",
        "turbo_queue.Queue, put_many/get_many"}
    assert_every_item_counted(medians, 3000)


def test_the_benchmark_runs_from_any_folder(tmp_path):
    result = subprocess.run(
        [sys.executable, str(TOOL), "--items", "2000", "--sweep", "1", "--only", "turbo", "--tmp", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "| 1 | turbo_queue.Queue |" in result.stdout


def test_the_zmq_rows_finish_and_count_every_item(tmp_path):
    import zmq  # noqa: F401  (the test extra installs pyzmq)

    _, results = run_bench(tmp_path, "--items", "3000", "--sweep", "1,2,8", "--only", "zmq,zmq-lists")
    assert results["timeouts"] == [] and len(results["medians"]) == 6
    assert_every_item_counted(results["medians"], 3000)


def _processes_mentioning(text: str) -> List[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass  # gone meanwhile
    return found


def test_a_row_that_does_not_finish_is_killed_with_its_processes_and_folder(tmp_path):
    from tools import bench

    row = bench.run_in_fresh_process("turbo_queue.Queue", 2, 2, 100_000_000, str(tmp_path), timeout=3)
    assert row is None
    assert list(tmp_path.iterdir()) == []
    deadline = time.monotonic() + 10
    while _processes_mentioning(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)  # SIGKILL is delivered at once; the kernel may take a moment to reap
    assert _processes_mentioning(str(tmp_path)) == []


def test_the_batch_file_costs_come_from_a_real_queue(tmp_path):
    from tools import bench

    costs = bench.storage_costs(2000, str(tmp_path), files=5)
    assert set(costs) == {"put_many_us", "get_many_us", "file_put_us", "file_get_us"}
    assert all(isinstance(value, float) for value in costs.values())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("in_memory", [False, True])
def test_the_plain_sqlite3_floor_reads_back_what_it_wrote(tmp_path, in_memory):
    from tools import bench

    costs = bench.storage_floor(2000, str(tmp_path), files=5, in_memory=in_memory)
    assert set(costs) == {"put_many_us", "get_many_us", "file_put_us", "file_get_us"}
    assert list(tmp_path.iterdir()) == []


def test_the_storage_comparison_measures_each_code_in_turn(tmp_path):
    stdout, results = run_bench(tmp_path, "--storage", "--items", "2000", "--rounds", "2",
                                "--baseline", sys.executable)
    assert "| plain sqlite3, in the file |" in stdout and "| plain sqlite3, in memory |" in stdout
    assert "| turbo_queue (" in stdout
    codes = [row["code"] for row in results["rows"]]
    assert codes.count("plain sqlite3, in the file") == codes.count("plain sqlite3, in memory") == 2
    assert len(results["rows"]) == 8 and len(results["medians"]) == 3  # the baseline is this checkout too


def test_ctrl_c_during_a_row_kills_its_processes_too(tmp_path):
    code = ("from tools import bench; "
            f"bench.run_in_fresh_process('turbo_queue.Queue', 2, 2, 100_000_000, {str(tmp_path)!r})")
    driver = subprocess.Popen([sys.executable, "-c", code], cwd=TOOL.parent.parent)
    deadline = time.monotonic() + 60
    while not _processes_mentioning(f"{tmp_path}/turbo_queue-bench-") and time.monotonic() < deadline:
        time.sleep(0.1)  # until the row's runner runs (the folder it is given is in its command line)
    time.sleep(1)
    driver.send_signal(signal.SIGINT)
    assert driver.wait(60) != 0  # KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    deadline = time.monotonic() + 10
    while _processes_mentioning(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_mentioning(str(tmp_path)) == []


def test_the_ping_pong_rows_echo_every_task(tmp_path):
    stdout, results = run_bench(tmp_path, "--items", "1000", "--sweep", "1", "--only", "turbo", "--pingpong", "5",
                                "--rounds", "2")
    assert "| ping-pong, one task out and its echo back | round trips | p50 ms | p99 ms | mean ms |" in stdout
    assert set(results["pingpong"]) == {"mp", "turbo", "turbo-flush"}
    for row in results["pingpong"].values():
        assert row["round_trips"] == 10 and 0 < row["p50_ms"] <= row["p99_ms"]


def test_the_breakdown_times_the_library_calls_of_each_turbo_queue_process(tmp_path):
    stdout, results = run_bench(tmp_path, "--items", "3000", "--sweep", "2", "--only", "mp-lists,turbo-many",
                                "--breakdown")
    rows = {row["contender"]: row for row in results["rows"]}
    assert "breakdown" not in rows["multiprocessing.Queue, lists of 100"]  # nothing of the library to time
    breakdown = rows["turbo_queue.Queue, put_many/get_many"]["breakdown"]
    producers, consumers = breakdown["producer"], breakdown["consumer"]
    assert producers["start: Enqueuer"][0] == 2 and consumers["start: Dequeuer"][0] == 2  # one per process
    assert producers["put_many"][0] == 30  # 3,000 items in lists of 100
    assert consumers["claim: try:got"][0] == consumers["claim: take:got"][0] >= 1  # a claim is one take won
    assert all(seconds >= 0 for timed in breakdown.values() for _, seconds in timed.values())
    assert_every_item_counted(results["rows"], 3000)


def test_the_herd_measures_waiting_consumers_of_both_queues(tmp_path):
    stdout, rows = run_bench(tmp_path, "--herd", "1,3", "--rounds", "1")
    assert "| consumers | queue | consumers' CPU per batch, ms | range | per batch and waiting consumer, ms |" in stdout
    assert sorted((row["kind"], row["consumers"]) for row in rows) == [("mp", 1), ("mp", 3), ("plain", 1), ("plain", 3), ("turbo", 1), ("turbo", 3)]
    for row in rows:  # herd() itself raises unless the consumers got every item
        assert row["ms_per_batch"] > 0
        assert row["ms_per_batch_and_consumer"] == pytest.approx(row["ms_per_batch"] / row["consumers"])
