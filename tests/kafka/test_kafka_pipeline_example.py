"""examples/kafka_to_kafka.py runs against the genuine broker, as the README shows it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"


def test_the_kafka_to_kafka_example_enriches_every_event(kafka):
    result = subprocess.run([sys.executable, "kafka_to_kafka.py", "--bootstrap-servers", kafka.bootstrap,
                             "--events", "3000", "--workers", "3"], capture_output=True, text=True, timeout=180,
                            cwd=EXAMPLES)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"3,000 events in events-\w+ \(1 partition\) -> 3 workers -> enriched-\w+", lines[0])
    assert re.fullmatch(r"enriched 3,000 events in [\d.]+ s: [\d,]+ events/s \(pipeline start included\); "
                        r"0 duplicates, 0 lost", lines[1]), result.stdout
