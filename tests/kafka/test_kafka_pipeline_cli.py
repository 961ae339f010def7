"""``turbo-queue pipeline`` without a broker: bad arguments, an unreachable broker, a stop while it starts, the progress line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from turbo_queue.kafka._errors import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from turbo_queue.cli.pipeline import load_function
from turbo_queue.kafka.pipeline import Pipeline, _Progress
from turbo_queue.kafka.status import write_status
from turbo_queue.supervisor import Supervisor

ROOT = Path(__file__).resolve().parent.parent.parent
#: A port where nothing listens (port 1 needs root to bind: nobody does).
NOBODY = "127.0.0.1:1"


def pipeline(*args: str, **popen: object) -> subprocess.Popen:
    command = [sys.executable, "-m", "turbo_queue", "pipeline", "--bootstrap-servers", NOBODY, "--from", "a",
               "--to", "b", "--group", "g", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT),
                            **popen)  # type: ignore[call-overload]


def test_a_function_that_cannot_be_imported_is_exit_2_naming_it():
    proc = pipeline("no_such_module:f")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_USAGE
    assert "cannot import 'no_such_module'" in err
    proc = pipeline("tests.kafka.pipeline_functions:nothing_here")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_USAGE and "'tests.kafka.pipeline_functions' has no 'nothing_here'" in err


def test_load_function():
    assert load_function("tests.kafka.pipeline_functions:tag").__name__ == "tag"
    for bad in ("tag", ":tag", "tests.kafka.pipeline_functions:"):
        with pytest.raises(ValueError, match="expected module:function"):
            load_function(bad)
    with pytest.raises(ValueError, match="is not a function"):
        load_function("tests.kafka.pipeline_functions:time")


def test_no_broker_is_exit_4_within_the_connect_timeout_naming_the_address():
    pytest.importorskip("confluent_kafka")
    proc = pipeline("--connect-timeout", "2", "tests.kafka.pipeline_functions:tag")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_UNAVAILABLE, err
    assert f"no Kafka broker answered at {NOBODY} within 2 s" in err


def test_sigterm_while_it_waits_for_the_broker_is_a_clean_stop():
    pytest.importorskip("confluent_kafka")
    proc = pipeline("-v", "--connect-timeout", "60", "tests.kafka.pipeline_functions:tag")
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert "looking for a broker at 127.0.0.1:1" in first, first
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_OK, err


def test_bad_settings_are_named():
    def f(message):
        return message

    common = {"bootstrap_servers": "h:1", "from_topic": "a", "to_topic": "b", "group": "g"}
    with pytest.raises(ValueError, match="workers must be a positive integer, got 0"):
        Pipeline(f, workers=0, **common)
    with pytest.raises(ValueError, match="value must be 'bytes' or 'json'"):
        Pipeline(f, value="xml", **common)
    with pytest.raises(ValueError, match="durable must be True or False"):
        Pipeline(f, durable="no", **common)
    with pytest.raises(ValueError, match="max_ready_files must be a positive integer, got 0"):
        Pipeline(f, max_ready_files=0, **common)
    with pytest.raises(ValueError, match="function must be callable"):
        Pipeline("f", **common)  # type: ignore[arg-type]


class Lines:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


def test_the_progress_line_counts_from_the_connectors_status_files(tmp_path):
    inside, outside = tmp_path / "in", tmp_path / "out"
    inside.mkdir()
    outside.mkdir()
    fake = SimpleNamespace(in_folder=str(inside), out_folder=str(outside))
    stream = Lines()
    progress = _Progress(fake, stream)  # type: ignore[arg-type]
    supervisor = Supervisor()
    write_status(str(inside), "source", {"kind": "source", "pid": os.getpid(), "messages_in": 100,
                                          "partitions": [{"lag": 5}, {"lag": 7}]})
    write_status(str(outside), "sink", {"kind": "sink", "pid": os.getpid(), "delivered": 40})
    progress.tick(supervisor)
    write_status(str(inside), "source", {"kind": "source", "pid": os.getpid(), "messages_in": 300,
                                          "partitions": [{"lag": 1}, {"lag": 0}]})
    write_status(str(outside), "sink", {"kind": "sink", "pid": os.getpid(), "delivered": 240})
    progress.tick(supervisor)
    progress.end()
    line = stream.text.strip("\r\n")
    assert line.startswith("in ") and "/s  out " in line
    assert "lag 1  backlog 0  restarts 0  (total in 300, out 240)" in line
    assert stream.text.endswith("\n")
