"""Every example runs, and the drop-in pair differs in one import line only."""

from __future__ import annotations

import difflib
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=180, cwd=EXAMPLES)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_drop_in_pair_differs_in_the_import_line_only():
    before = (EXAMPLES / "pipeline_multiprocessing.py").read_text().splitlines()
    after = (EXAMPLES / "pipeline_turbo_queue.py").read_text().splitlines()
    changed = [line for line in difflib.unified_diff(before, after, lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert changed == ["-from multiprocessing import Queue", "+from turbo_queue import Queue"]


@pytest.mark.parametrize("name", ["pipeline_multiprocessing.py", "pipeline_turbo_queue.py"])
def test_the_pipeline_gives_the_same_answer_with_either_queue(name):
    assert run(name) == f"sum of squares of 20000 numbers: {sum(n * n for n in range(20000))}\n"


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_the_pool_example_with_every_start_method(method):
    assert run("pool_initializer.py", method).startswith(f"{method}: 15 findings")


def test_every_example_is_run_here():
    ran = {"pipeline_multiprocessing.py", "pipeline_turbo_queue.py", "pool_initializer.py"}
    ran |= {"kafka_to_kafka.py"}  # needs a broker: run by tests/kafka/test_kafka_pipeline_example.py
    assert {p.name for p in EXAMPLES.glob("*.py")} == ran
