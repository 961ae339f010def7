"""The command line without rough edges: ``python -m turbo_queue ...`` run as programs, as a user
would meet each edge, and the README's word on the commands checked against them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import List

import pytest

from tests.support import hand_over, listing
from tests.support.commands import has, run
from tests.support.programs import PRODUCER
from turbo_queue.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def subcommands() -> List[str]:
    """The names of the ``turbo-queue`` subcommands, as its parser knows them."""
    parser = build_parser()
    (action,) = [a for a in parser._actions if a.dest == "command"]
    return list(action.choices)  # type: ignore[arg-type]


def section(title: str) -> str:
    """The README's text under the ``## title`` heading, to the next such heading."""
    start = README.index(f"\n{title}\n")
    end = README.find("\n## ", start + len(title) + 2)
    return README[start:end if end > 0 else None]


# -- demo ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("below", [False, True])
def test_demo_on_a_file_says_not_a_folder_once(tmp_path, below):
    file = tmp_path / "events"
    file.write_text("not a queue")
    target = file / "q" if below else file
    result = run("demo", "--folder", str(target), "--items", "1000")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr  # the workers were never started
    (line,) = result.stderr.splitlines()
    assert line.startswith("turbo-queue demo: ") and "not a folder" in line and str(file) in line
    assert file.read_text() == "not a queue"


def test_demo_in_a_folder_it_names(tmp_path):
    result = run("demo", "--folder", str(tmp_path / "new" / "q"), "--items", "2000")
    assert result.returncode == 0, result.stderr
    assert "lost 0, duplicated 0: every item arrived" in result.stdout


# -- stats and monitor --once ---------------------------------------------------------------------


@pytest.mark.parametrize("command", [["stats"], ["monitor", "--once"]])
def test_a_missing_folder_is_not_waited_for_and_the_output_does_not_say_so(tmp_path, command):
    missing = str(tmp_path / "missing")
    result = run(*command, missing)
    assert result.returncode == 2
    assert "waiting" not in result.stdout
    assert f"{missing}\n  no such folder" in result.stdout
    assert f"{missing}: no such folder" in result.stderr


def unreadable_beside_a_batch(folder: str) -> str:
    """A ready_ file of random bytes beside a good batch of 10 items: its name."""
    hand_over(folder, 10)
    name = f"ready_1700000000_{uuid.uuid4()}.db"
    with open(os.path.join(folder, name), "wb") as f:
        f.write(os.urandom(4096))
    return name


@pytest.mark.parametrize("command", [["stats"], ["stats", "--json"], ["stats", "--prometheus"],
                                     ["monitor", "--once"]])
def test_unreadable_files_make_stats_exit_1_as_its_table_says(folder, command):
    name = unreadable_beside_a_batch(folder)
    result = run(*command, folder)
    assert result.returncode == 1, result.stderr
    assert "1 file is not a readable batch" in result.stderr
    if command == ["stats", "--prometheus"]:
        assert "turbo_queue_backlog_items" in result.stdout  # the figures are printed all the same
    else:
        assert name in result.stdout  # listed as unreadable


def test_stats_exits_0_when_every_file_reads(folder):
    hand_over(folder, 10)
    result = run("stats", folder)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


# -- peek ------------------------------------------------------------------------------------------


def test_peek_tells_a_live_producers_loading_file_from_a_dead_ones(folder, children):
    producer = children(PRODUCER, folder, ready="holding")
    (loading,) = listing(folder)["loading"]
    path = os.path.join(folder, loading)
    live = run("peek", path)
    assert live.returncode == 1
    assert "is being filled by its producer" in live.stderr
    producer.kill()
    dead = run("peek", path)
    assert dead.returncode == 1
    assert "being filled" not in dead.stderr
    assert "belongs to a producer that died" in dead.stderr and f"turbo-queue recover {folder}" in dead.stderr


# -- monitor --ls ----------------------------------------------------------------------------------


def test_the_live_view_with_ls_shows_every_folder_beside_one_of_5000_files(tmp_path, terminal):
    big, small = str(tmp_path / "big"), str(tmp_path / "small")
    os.mkdir(big)
    os.mkdir(small)
    (one,) = hand_over(big, 10)
    epoch = one.split("_")[1]
    for _ in range(4999):
        shutil.copyfile(os.path.join(big, one), os.path.join(big, f"ready_{epoch}_{uuid.uuid4()}.db"))
    hand_over(small, 7)
    term = terminal("monitor", big, small, "--ls", rows=40, cols=100)
    screen = term.wait_for(lambda s: has("backlog    50,000 items in 5,000 batches")(s)
                           and has("backlog    7 items in 1 batch")(s), "both folders' figures")
    assert small in screen
    assert any(line.startswith("… ") and "of the listing" in line for line in screen)
    assert len(screen) <= 40
    term.send(b"q")
    assert term.wait_exit() == 0


# -- help ------------------------------------------------------------------------------------------


def exit_codes(help_text: str) -> str:
    """The "exit codes:" block of a --help."""
    return help_text[help_text.index("exit codes:"):]


def test_every_command_has_examples_and_exit_codes_of_its_own():
    blocks = {}
    for name in subcommands():
        result = subprocess.run([sys.executable, "-m", "turbo_queue", name, "--help"], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "\nexamples:\n" in result.stdout, name
        blocks[name] = exit_codes(result.stdout)
        assert "\n  130  " in blocks[name], f"{name} does not say what Ctrl-C exits with"
    peek = blocks["peek"]
    assert "q pressed" not in peek and "SIGTERM" not in peek and "address" not in peek
    assert "SIGTERM" in blocks["exporter"] and "q pressed" in blocks["monitor"]
    for name in ("demo", "recover", "monitor", "stats", "exporter", "peek"):
        others = [blocks[other] for other in blocks if other != name]
        assert blocks[name] not in others, f"{name} shows the exit codes of another command"


NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
           "eleven": 11, "twelve": 12}


def test_the_readme_lists_every_command_and_counts_them_right():
    text = section("## Command line")
    listed = re.findall(r"^- `turbo-queue ([a-z-]+)", text, re.MULTILINE)
    assert listed == subcommands() == [module.__name__.rsplit(".", 1)[1].replace("_", "-") for module in COMMANDS]
    (word,) = re.findall(r"These (\w+) are all the commands", text)
    assert NUMBERS[word] == len(listed)
    for word in re.findall(r"\b(\w+) commands\b", README):  # as "All four commands" did, of four unnamed
        assert word.lower() not in NUMBERS, f'"{word} commands": name them'


def test_bench_help_shows_no_rest_markup():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "bench.py"), "--help"], capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "``" not in result.stdout and ":func:" not in result.stdout
    assert "_run" not in result.stdout  # the runner of one row is not a command for people
    assert "python tools/bench.py" in result.stdout


# -- the README's migration snippet ---------------------------------------------------------------


def test_the_migration_snippet_prints_what_it_says(tmp_path):
    text = section("## Migrating from turbo-queue 0.5.2 and 0.8.0")
    code = text[text.index("```python\n") + len("```python\n"):]
    code = code[:code.index("```")]
    said = re.findall(r"print\(data\)\s+# (.+)", code)
    assert said == ["{'data': 'add_to_queue'}"]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == said[0] + "\n"
