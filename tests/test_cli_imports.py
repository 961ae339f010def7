"""A light command starts light: each command imports what is heavy only when it runs."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
from turbo_queue.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_recover_imports_neither_the_monitor_nor_the_benchmark_nor_an_http_server(folder):
    result = subprocess.run([sys.executable, "-c", PROBE, "recover", "--dry-run", "--quiet", folder],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["code"] == 0
    modules = found["modules"]
    assert "turbo_queue.recovery" in modules  # the probe saw the command run
    heavy = [name for name in modules
             if name == "http.server" or name.split(".")[:2] == ["turbo_queue", "monitor"]
             or name in ("bench", "tools.bench", "turbo_queue.bench")]
    assert heavy == []
