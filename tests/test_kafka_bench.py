"""The Kafka benchmark's pieces that need no broker: events, transforms, calibration, counting, the report.

Nothing here asserts a speed: the calibration is checked for its form, not for its timing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from tools import kafka_bench

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def test_events_are_about_200_bytes_of_json_with_a_unique_id():
    events = [kafka_bench.make_event(i) for i in (0, 7, 199_999)]
    assert [orjson.loads(e)["id"] for e in events] == [0, 7, 199_999]
    assert all(150 <= len(e) <= 250 for e in events)


@pytest.mark.parametrize("name", ["trivial", "heavy"])
def test_each_transform_keeps_the_event_and_adds_to_it(name):
    value = kafka_bench.make_event(42)
    out = orjson.loads(kafka_bench.TRANSFORMS[name](value, 5))
    assert out["seen"] is True
    assert {k: v for k, v in out.items() if k in orjson.loads(value)} == orjson.loads(value)


def test_the_heavy_transform_does_the_work_it_is_given():
    value = kafka_bench.make_event(42)
    few, many = (orjson.loads(kafka_bench.heavy(value, rounds))["pseudonym"] for rounds in (1, 50))
    assert few != many and len(few) == len(many) == 16
    assert kafka_bench.heavy(value, 50) == kafka_bench.heavy(value, 50)


def test_calibration_gives_rounds_and_the_cpu_it_measured():
    rounds, measured = kafka_bench.calibrate(100.0)
    assert isinstance(rounds, int) and rounds >= 1
    assert measured > 0
    with pytest.raises(ValueError, match="positive"):
        kafka_bench.calibrate(0)


def test_counting_ids_finds_the_lost_the_duplicated_and_the_unexpected():
    assert kafka_bench.count_ids(range(10), 10) == (0, 0, 0)
    assert kafka_bench.count_ids([0, 1, 1, 1, 3, 12, -1], 5) == (2, 2, 2)  # 2 and 4 lost, 1 twice more
    assert kafka_bench.count_ids([], 3) == (3, 0, 0)


def test_first_input_is_the_earliest_noted_by_any_process(tmp_path):
    assert kafka_bench.first_consumed(str(tmp_path)) is None
    (tmp_path / "first-1").write_text("1700000002.5")
    (tmp_path / "first-2").write_text("1700000001.25")
    (tmp_path / "process-0.log").write_text("not a time")
    assert kafka_bench.first_consumed(str(tmp_path)) == 1700000001.25


def test_mark_first_notes_once_per_process(tmp_path):
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); import kafka_bench as k\n"
            "k.mark_first(sys.argv[2]); time.sleep(0.01); k.mark_first(sys.argv[2])\n")
    before = time.time()
    subprocess.run([sys.executable, "-c", code, str(TOOLS), str(tmp_path)], check=True)
    names = os.listdir(tmp_path)
    assert len(names) == 1 and names[0].startswith("first-")
    assert before <= kafka_bench.first_consumed(str(tmp_path)) <= time.time()


def test_memory_and_descendants_of_a_process_tree():
    child = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; "
                              "subprocess.run([sys.executable, '-c', 'import time; time.sleep(30)'])"])
    try:
        deadline = time.monotonic() + 30
        while len(kafka_bench._descendants([child.pid])) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        tree = kafka_bench._descendants([child.pid])
        assert len(tree) == 2 and tree[0] == child.pid
        rss, pss = kafka_bench.memory(tree)
        assert rss > 0 and 0 < pss <= rss
        assert kafka_bench.process_cpu(child.pid) is not None
    finally:
        for pid in kafka_bench._descendants([child.pid])[::-1]:
            os.kill(pid, 9)
        child.wait()
    assert kafka_bench.memory([child.pid]) == (0, 0) and kafka_bench.process_cpu(child.pid) is None


def row(contender, partitions, transform, workers, rate, rss=100.0, lost=0):
    return {"contender": contender, "partitions": partitions, "transform": transform, "workers": workers,
            "msgs_per_s": rate, "cpu_us_per_msg": 10.0, "peak_rss_mb": rss, "peak_pss_mb": rss / 2,
            "lost": lost, "duplicated": 0, "unexpected": 0}


def test_medians_keep_the_middle_round_and_the_goals_read_the_figures():
    rows = [row("turbo_queue", 1, "heavy", 4, r) for r in (10_000, 30_000, 20_000)]
    rows += [row("plain", 1, "heavy", 4, 10_000), row("quix", 1, "heavy", 4, 9_000),
             row("turbo_queue", 4, "heavy", 4, 15_000, rss=90), row("plain", 4, "heavy", 4, 16_000, rss=120),
             row("turbo_queue", 4, "trivial", 4, 50_000), row("plain", 4, "trivial", 4, 60_000, lost=3)]
    kept = kafka_bench.medians(rows)
    assert [r["msgs_per_s"] for r in kept if r["contender"] == "turbo_queue" and r["partitions"] == 1] == [20_000]
    assert [r["rounds"] for r in kept if r["partitions"] == 1] == [3, 1, 1]  # turbo_queue, plain, quix: in turn
    verdicts = {goal.split(":")[0]: met for goal, met, _ in kafka_bench.goals(kept, rows)}
    assert verdicts == {
        "CPU-heavy, 1 partition": True,  # 2.0x and ahead of Quix Streams
        "CPU-heavy, 4 partitions": False,  # 0.94x
        "trivial transform": True,  # 0.83x
        "lost 0 in every row": False,
        "N = 4": False,  # 90 MB below 120 MB, but 100 MB against 100 MB is not below
    }
    assert "| turbo_queue pipeline | 1 | heavy | 4 | 20,000 |" in kafka_bench.table(kept)


def test_the_tool_explains_itself_and_refuses_bad_flags():
    tool = [sys.executable, str(TOOLS / "kafka_bench.py")]
    shown = subprocess.run([*tool, "--help"], capture_output=True, text=True, check=True).stdout
    assert "--workers" in shown and "--rounds" in shown and "Quix Streams" in shown
    wrong = subprocess.run([*tool, "--workers", "0,2"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "positive integers" in wrong.stderr
    wrong = subprocess.run([*tool, "--contenders", "kafka-streams"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "turbo_queue, plain, quix" in wrong.stderr


def test_the_package_does_not_import_the_tool():
    code = "import sys, turbo_queue, turbo_queue.kafka; print('kafka_bench' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
