"""tools/pipeline_stages.py runs each Kafka stage and its floor against a genuine broker and reports them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "tools" / "pipeline_stages.py"


def test_pipeline_stages_reports_every_stage_beside_its_floor(kafka, tmp_path):
    out = tmp_path / "rows.json"
    done = subprocess.run([sys.executable, str(TOOL), "--bootstrap-servers", kafka.bootstrap, "--events", "3000",
                           "--partitions", "2", "--json", str(out), "--profile", str(tmp_path / "prof"), "--top", "3"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [row["stage"] for row in rows] == ["source", "worker", "sink"]
    assert all(row["us"] > 0 and row["floor_us"] > 0 for row in rows)
    assert rows[1]["function"] > 0
    for stage in ("source", "worker", "sink"):
        assert f"# cProfile of {stage}" in done.stdout
        assert (tmp_path / "prof" / f"{stage}.prof").stat().st_size > 0


def test_pipeline_stages_refuses_an_unknown_stage():
    done = subprocess.run([sys.executable, str(TOOL), "--bootstrap-servers", "127.0.0.1:1", "--stages", "nope"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--stages takes source,worker,sink" in done.stderr
