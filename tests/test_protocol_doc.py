"""Every reliability rule the code cites ("R4") is defined in docs/protocol.md."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CITED = re.compile(r"\bR(\d+)\b")
DEFINED = re.compile(r"^\*\*R(\d+)\. ", re.MULTILINE)


def _cited() -> dict:
    cited: dict = {}
    for folder in ("turbo_queue", "tools"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number in CITED.findall(path.read_text(encoding="utf-8")):
                cited.setdefault(int(number), path.relative_to(ROOT).as_posix())
    return cited


def test_every_rule_the_code_cites_is_defined_in_the_protocol_document():
    defined = {int(n) for n in DEFINED.findall((ROOT / "docs" / "protocol.md").read_text(encoding="utf-8"))}
    cited = _cited()
    assert cited, "no rule is cited at all: the pattern is wrong"
    missing = {f"R{n}": where for n, where in cited.items() if n not in defined}
    assert not missing, f"cited but not defined in docs/protocol.md: {missing}"


def test_the_protocol_document_numbers_its_rules_without_gaps():
    numbers = [int(n) for n in DEFINED.findall((ROOT / "docs" / "protocol.md").read_text(encoding="utf-8"))]
    assert numbers == list(range(1, len(numbers) + 1))
