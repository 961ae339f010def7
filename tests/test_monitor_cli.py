"""``turbo-queue monitor``, ``stats``, ``exporter`` and ``peek``, run as programs against real queue
folders with real producers and consumers; the live view in a real pseudo-terminal (and in tmux,
a real terminal emulator, where it is installed)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import termios
import time
import uuid

import pytest

from turbo_queue import Enqueuer

from tests.support import DEADLINE, drain, listing, hand_over, snapshot, wait_for
from tests.support.commands import CLI, has, m, run
from tests.support.programs import CONSUMER, PRODUCER

SCRIPT = os.path.join(os.path.dirname(sys.executable), "turbo-queue")
RESTORE = b"\x1b[?25h\x1b[?1049l"  # cursor shown, normal screen back


def stats_json(*folders: str) -> dict:
    result = run("stats", "--json", *folders)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def words(text: str) -> str:
    return " ".join(text.split())


# -- stats ---------------------------------------------------------------------------------------------


@pytest.fixture
def busy(folder: str, children) -> dict:
    """A queue in the middle of its life, with what the test knows of it.

    An orphaned chosen_ batch of 5 (its consumer was killed), a live consumer holding a batch of
    40 with 20 acknowledged, ready batches of 20 and 30, a live producer with a loading_ file, a
    killed producer's loading_ file, and a bad_ file.
    """
    hand_over(folder, 5)
    dead_consumer = children(CONSUMER.replace("range(21)", "range(1)"), folder, ready="holding")
    (orphan_chosen,) = listing(folder)["chosen"]
    hand_over(folder, 40)
    consumer = children(CONSUMER, folder, ready="holding")  # claims the 40 while the other still holds its 5
    (live_chosen,) = [name for name in listing(folder)["chosen"] if name != orphan_chosen]
    dead_consumer.kill()
    ready = hand_over(folder, 20, 30)
    producer = children(PRODUCER, folder, ready="holding")
    (live_loading,) = listing(folder)["loading"]
    dead_producer = children(PRODUCER, folder, ready="holding")
    (dead_loading,) = [name for name in listing(folder)["loading"] if name != live_loading]
    dead_producer.kill()
    bad = f"bad_{int(time.time())}_{uuid.uuid4()}.db"
    with open(os.path.join(folder, bad), "w") as f:
        f.write("a file that failed a check")
    return {
        "files": {"loading": 2, "ready": 2, "chosen": 2, "bad": 1},
        "backlog": 5 + 20 + 20 + 30,
        "live": {live_loading: producer.pid, live_chosen: consumer.pid},
        "orphaned": sorted([orphan_chosen, dead_loading]),
        "oldest_epoch": min(int(name.split("_")[1]) for name in ready),
        "producer": producer, "consumer": consumer,
    }


def test_stats_json_tells_what_the_test_did_and_touches_nothing(folder, busy):
    before = snapshot(folder)
    doc = stats_json(folder)
    assert snapshot(folder) == before
    assert doc["schema"] == 1 and doc["sample_seconds"] == 0
    (q,) = doc["queues"]
    assert set(q) == {"queue", "exists", "error", "files", "backlog_items", "uncounted_batches",
                      "oldest_ready_age_seconds", "live", "orphaned", "unreadable", "handed_over", "consumed",
                      "connectors"}
    assert q["queue"] == folder and q["exists"] is True and q["error"] is None
    assert q["files"] == busy["files"]
    assert q["backlog_items"] == busy["backlog"] and q["uncounted_batches"] == 0
    assert q["live"] == busy["live"]
    assert q["orphaned"] == busy["orphaned"]
    assert q["unreadable"] == []
    assert q["oldest_ready_age_seconds"] == pytest.approx(doc["time"] - busy["oldest_epoch"], abs=0.01)
    assert q["handed_over"] is None and q["consumed"] is None
    assert q["connectors"] == []
    # The producer and the consumer were not disturbed.
    assert busy["producer"].finish() == 0 and busy["consumer"].finish() == 0


def test_stats_text_and_prometheus_say_the_same(folder, busy):
    from prometheus_client.parser import text_string_to_metric_families

    text = run("stats", folder)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == folder
    assert "  files      loading 2   ready 2   chosen 2   bad 1" in lines
    assert any(line.startswith(f"  backlog    {busy['backlog']} items in 4 batches   oldest ready: ") for line in lines)
    assert "  orphaned   2 files whose process died, waiting for recovery" in text.stdout
    for name in busy["orphaned"]:
        assert f"    {name}" in lines
    assert f"(pid {busy['producer'].pid})" in text.stdout and f"(pid {busy['consumer'].pid})" in text.stdout

    prom = run("stats", "--prometheus", folder)
    assert prom.returncode == 0, prom.stderr
    families = {f.name: f for f in text_string_to_metric_families(prom.stdout)}
    def value(name: str, **labels: str) -> float:
        (sample,) = [s for s in families[name].samples if s.labels == {"queue": folder, **labels}]
        return sample.value
    for state, n in busy["files"].items():
        assert value("turbo_queue_files", state=state) == n
    assert value("turbo_queue_backlog_items") == busy["backlog"]
    assert value("turbo_queue_orphaned_files", state="loading") == 1
    assert value("turbo_queue_orphaned_files", state="chosen") == 1
    assert value("turbo_queue_folder_exists") == 1
    assert value("turbo_queue_oldest_ready_age_seconds") >= 0
    assert all(f.type == "gauge" for f in families.values())  # no counter from a one-off look
    for family in families.values():
        assert f"# HELP {family.name} " in prom.stdout and f"# TYPE {family.name} gauge" in prom.stdout


def test_stats_sample_counts_a_pipeline_running_through_it(folder, children):
    """Watched for a while, with a producer handing over 7-item batches the whole time: every
    batch seen is counted with its 7 items, and a consumer's finished batches too."""
    stop = os.path.join(folder, "..", "stop")
    producer = subprocess.Popen([sys.executable, "-c", f"""
import os, sys, time, turbo_queue
with turbo_queue.Enqueuer(sys.argv[1], max_batch_delay=3600) as e:
    while not os.path.exists({stop!r}):
        e.put_many(list(range(7))); e.flush(); time.sleep(0.01)
""", folder])
    try:
        wait_for(lambda: listing(folder)["ready"], "the first batch", interval=0.01)
        result = run("stats", "--json", "--sample", "1.5", folder)
    finally:
        open(stop, "w").close()
        producer.wait(timeout=DEADLINE)
    assert result.returncode == 0, result.stderr
    (q,) = json.loads(result.stdout)["queues"]
    handed_over, consumed = q["handed_over"], q["consumed"]
    assert handed_over["batches"] >= 1 and handed_over["uncounted_batches"] == 0
    assert handed_over["items"] == 7 * handed_over["batches"]
    assert consumed["batches"] == 0 and consumed["items"] == 0
    assert handed_over["seconds"] >= 1.5
    assert handed_over["batches_per_second"] == pytest.approx(handed_over["batches"] / handed_over["seconds"], rel=0.01)


def test_stats_of_thousands_of_batches(folder):
    (one,) = hand_over(folder, 10)
    epoch = one.split("_")[1]
    for _ in range(2999):
        shutil.copyfile(os.path.join(folder, one), os.path.join(folder, f"ready_{epoch}_{uuid.uuid4()}.db"))
    doc = stats_json(folder)
    (q,) = doc["queues"]
    assert q["files"]["ready"] == 3000 and q["backlog_items"] == 30_000 and q["uncounted_batches"] == 0


def test_stats_of_several_folders_and_a_missing_one(tmp_path):
    a, b, missing = str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "missing")
    os.mkdir(a)
    os.mkdir(b)
    hand_over(a, 3)
    hand_over(b, 4, 5)
    result = run("stats", "--json", a, b, missing)
    assert result.returncode == 2
    assert result.stderr.strip() == f"turbo-queue stats: {missing}: no such folder"
    queues = {q["queue"]: q for q in json.loads(result.stdout)["queues"]}
    assert queues[a]["backlog_items"] == 3 and queues[b]["backlog_items"] == 9
    assert queues[missing]["exists"] is False and queues[missing]["error"] == "no such folder"
    assert not os.path.exists(missing)  # looking does not create it


def test_stats_of_a_file_is_a_usage_error(folder):
    (name,) = hand_over(folder, 1)
    result = run("stats", os.path.join(folder, name))
    assert result.returncode == 2
    assert "not a folder" in result.stderr


# -- monitor --once ------------------------------------------------------------------------------------


def test_monitor_once_with_ls_shows_the_folder_as_ls_does(folder, busy):
    result = run("monitor", "--once", "--ls", folder, env={"COLUMNS": "150"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("turbo-queue monitor  ")
    assert "  files      loading 2   ready 2   chosen 2   bad 1" in lines
    start = next(i for i, line in enumerate(lines) if line.startswith("  $ ls -C"))
    expected = subprocess.run(["ls", "-C", "-T", "0", "-w", "150"], cwd=folder, capture_output=True, text=True,
                              env=dict(os.environ, LC_ALL="C"), check=True).stdout.splitlines()
    assert lines[start + 1:] == expected
    assert busy["producer"].finish() == 0 and busy["consumer"].finish() == 0


def test_monitor_once_quiet_and_sample(folder):
    hand_over(folder, 3)
    result = run("monitor", "--once", "-q", "--sample", "0.2", folder)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == folder  # no header line
    assert any(line.startswith("  handed over") and "total 0 batches, 0 items" in line for line in lines)


def test_monitor_without_a_terminal_says_to_use_once(folder):
    result = run("monitor", folder)
    assert result.returncode == 2
    assert "needs a terminal" in result.stderr and "--once" in result.stderr
    result = run("monitor", "--sample", "2", folder)
    assert result.returncode == 2 and "--sample goes with --once" in result.stderr


# -- exporter --------------------------------------------------------------------------------------------


def test_exporter_counts_what_is_handed_over_and_consumed(folder, exporters):
    hand_over(folder, 4)  # there before: backlog, not counted as handed over
    exporter = exporters(folder)
    first = exporter.metrics()
    assert first[m("turbo_queue_backlog_items", folder)] == 4
    assert first[m("turbo_queue_batches_handed_over_total", folder)] == 0
    hand_over(folder, 10, 20, 30)
    metrics = exporter.wait_for(lambda x: x[m("turbo_queue_batches_handed_over_total", folder)] == 3, "3 handed over")
    assert metrics[m("turbo_queue_items_handed_over_total", folder)] == 60
    assert metrics[m("turbo_queue_backlog_items", folder)] == 64
    assert metrics[m("turbo_queue_files", folder, state="ready")] == 4
    assert sorted(drain(folder)) == sorted(list(range(4)) + list(range(60)))
    metrics = exporter.wait_for(lambda x: x[m("turbo_queue_batches_consumed_total", folder)] == 4, "4 consumed")
    assert metrics[m("turbo_queue_items_consumed_total", folder)] == 64
    assert metrics[m("turbo_queue_backlog_items", folder)] == 0
    assert metrics[m("turbo_queue_batches_uncounted_total", folder, flow="handed_over")] == 0
    assert metrics[m("turbo_queue_batches_uncounted_total", folder, flow="consumed")] == 0
    assert metrics[m("turbo_queue_oldest_ready_age_seconds", folder)] == 0
    # The exporter holds no lock of any kind on the queue's files.
    with open("/proc/locks") as f:
        assert not [line for line in f if line.split()[4:5] == [str(exporter.proc.pid)]]
    assert exporter.get("/")[0] == 200 and exporter.get("/nothing")[0] == 404
    assert exporter.stop(signal.SIGINT) == 130


def test_exporter_keeps_up_with_a_storm_of_small_batches(folder, exporters):
    """A producer hands over 1,000 batches of 3 items as fast as it can while a consumer takes
    them: thousands of events a second. Every batch is counted; an item count is either read or
    the batch is reported as uncounted."""
    exporter = exporters(folder)
    exporter.metrics()
    code = """
import sys, turbo_queue
if sys.argv[2] == "produce":
    with turbo_queue.Enqueuer(sys.argv[1], batch_size=3, chunk_size=3, max_batch_delay=3600) as e:
        e.put_many(list(range(3000)))
else:
    got = 0
    with turbo_queue.Dequeuer(sys.argv[1]) as d:
        while got < 3000:
            got += len(d.get_many(1000, timeout=30))
"""
    workers = [subprocess.Popen([sys.executable, "-c", code, folder, role]) for role in ("consume", "produce")]
    assert [w.wait(timeout=DEADLINE) for w in workers] == [0, 0]
    metrics = exporter.wait_for(lambda x: x[m("turbo_queue_batches_handed_over_total", folder)] == 1000
                                and x[m("turbo_queue_batches_consumed_total", folder)] == 1000,
                                "1,000 batches each way")
    for flow in ("handed_over", "consumed"):
        items = metrics[m(f"turbo_queue_items_{flow}_total", folder)]
        uncounted = metrics[m("turbo_queue_batches_uncounted_total", folder, flow=flow)]
        assert items + 3 * uncounted == 3000
    assert metrics[m("turbo_queue_backlog_items", folder)] == 0
    assert exporter.stop(signal.SIGTERM) == 0


def test_exporter_waits_for_a_folder_that_does_not_exist_yet(tmp_path, exporters):
    folder = str(tmp_path / "later")
    exporter = exporters(folder)
    assert exporter.metrics()[m("turbo_queue_folder_exists", folder)] == 0
    os.mkdir(folder)
    exporter.wait_for(lambda x: x[m("turbo_queue_folder_exists", folder)] == 1, "the folder")
    hand_over(folder, 6)
    metrics = exporter.wait_for(lambda x: x.get(m("turbo_queue_batches_handed_over_total", folder)) == 1, "a batch")
    assert metrics[m("turbo_queue_items_handed_over_total", folder)] == 6
    shutil.rmtree(folder)
    exporter.wait_for(lambda x: x[m("turbo_queue_folder_exists", folder)] == 0, "the folder to go")
    assert exporter.stop() == 130


def test_exporter_bad_listen_addresses(folder):
    for listen in (":9464", "localhost:http", "127.0.0.1:70000", "[::1"):
        result = run("exporter", folder, "--listen", listen)
        assert result.returncode == 2, (listen, result.stderr)
        assert result.stderr.startswith("turbo-queue exporter: --listen ")


def test_exporter_address_in_use(folder, exporters):
    exporter = exporters(folder)
    port = exporter.url.rsplit(":", 1)[1]
    result = run("exporter", folder, "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


# -- the live view in a pseudo-terminal ------------------------------------------------------------------

def test_live_view_follows_a_pipeline_and_ends_on_ctrl_c(tmp_path, terminal, children):
    folder = str(tmp_path / "queue")  # not there yet
    term = terminal("monitor", folder, "--ls")
    term.wait_for(has("no such folder (yet): waiting for it to appear"), "the waiting line")
    os.mkdir(folder)
    term.wait_for(has("files      loading 0   ready 0   chosen 0   bad 0"), "the empty folder")
    names = hand_over(folder, 10, 20, 30)
    screen = term.wait_for(has("total 3 batches, 60 items"), "3 batches handed over")
    assert any("backlog    60 items in 3 batches" in line for line in screen)
    assert any(line.startswith("  handed over") and "items/s" in line for line in screen)
    term.wait_for(lambda s: all(any(name in line for line in s) for name in names), "the ls -C listing")

    producer = children(PRODUCER, folder, ready="holding")
    term.wait_for(has(f"1 loading_ file (pid {producer.pid})"), "the live producer")
    producer.kill()  # no event in the folder: the view notices on its clock
    (orphan,) = listing(folder)["loading"]
    term.wait_for(lambda s: has("orphaned   1 file whose process died")(s) and has(f"    {orphan}")(s), "the orphan")

    assert sorted(drain(folder)) == sorted(range(60))
    term.wait_for(lambda s: any(l.startswith("  consumed") and "total 3 batches, 60 items" in l for l in s),
                  "3 batches consumed")

    term.resize(30, 60)
    screen = term.wait_for(lambda s: s and all(len(line) < 60 for line in s) and has("files")(s), "the narrow frame")
    assert len(screen) <= 30

    shutil.rmtree(folder)
    term.wait_for(has("waiting for it to appear"), "the folder to go")

    term.send(b"\x03")  # Ctrl-C
    assert term.wait_exit() == 130
    assert bytes(term.output).rstrip().endswith(RESTORE)
    assert termios.tcgetattr(term.slave) == term.before  # echo and line editing are back


def test_live_view_of_thousands_of_batches_fits_the_terminal(folder, terminal):
    (one,) = hand_over(folder, 10)
    epoch = one.split("_")[1]
    for _ in range(2999):
        shutil.copyfile(os.path.join(folder, one), os.path.join(folder, f"ready_{epoch}_{uuid.uuid4()}.db"))
    term = terminal("monitor", folder, "--ls", rows=24, cols=100)
    screen = term.wait_for(has("backlog    30,000 items in 3,000 batches"), "3,000 batches counted")
    assert "  files      loading 0   ready 3,000   chosen 0   bad 0" in screen
    assert len(screen) == 24 and screen[-1].startswith("… ") and screen[-1].endswith("make the terminal taller")
    assert all(len(line) < 100 for line in screen)
    term.send(b"\x03")
    assert term.wait_exit() == 130


def test_live_view_q_quits_and_sigterm_too(folder, terminal):
    term = terminal("monitor", folder)
    term.wait_for(has("files      loading 0"), "the first picture")
    term.send(b"q")
    assert term.wait_exit() == 0
    assert bytes(term.output).rstrip().endswith(RESTORE) and termios.tcgetattr(term.slave) == term.before

    term = terminal("monitor", folder)
    term.wait_for(has("files      loading 0"), "the first picture")
    term.proc.send_signal(signal.SIGTERM)
    assert term.wait_exit() == 0
    assert bytes(term.output).rstrip().endswith(RESTORE) and termios.tcgetattr(term.slave) == term.before


def test_live_view_redraws_only_when_something_changed(folder, terminal):
    """Idle, the picture is drawn again only when its text changes (the clock in the header, once a
    second): not four times a second."""
    term = terminal("monitor", folder)
    term.wait_for(has("files      loading 0"), "the first picture")
    seen = set()
    frames = 0
    while len(seen) < 3:
        before = len(term.output)
        term._read(1.0)
        frames += bytes(term.output[before:]).count(b"\x1b[H")
        seen.add(term.screen()[0])
    assert frames <= len(seen) + 1  # one frame per new header (clock) line
    term.send(b"\x03")
    assert term.wait_exit() == 130


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")
def test_live_view_in_tmux_as_a_person_sees_it(folder, tmp_path):
    """tmux is a real terminal emulator: what capture-pane shows is what a person sees."""
    hand_over(folder, 10, 20)
    tmux = ["tmux", "-L", f"turbo-queue-test-{uuid.uuid4().hex[:8]}", "-f", "/dev/null"]
    env = dict(os.environ, LANG="C.UTF-8")
    status = tmp_path / "status"
    # bash reports the exit status (tmux's own #{pane_dead_status} sometimes never comes: it can
    # leave the exited process unreaped). bash goes on after a child that exits 130 on Ctrl-C.
    command = f"{shlex.join([*CLI, 'monitor', folder, '--ls'])}; echo $? > {shlex.quote(str(status))}; sleep 60"

    def tmux_out(*args: str) -> str:
        return subprocess.run([*tmux, *args], capture_output=True, text=True, env=env, check=True).stdout

    subprocess.run([*tmux, "new-session", "-d", "-x", "120", "-y", "30", "bash", "-c", command], check=True, env=env)
    try:
        wait_for(lambda: "backlog    30 items in 2 batches" in tmux_out("capture-pane", "-p"),
                 "the backlog on the screen", interval=0.05)
        shown = tmux_out("capture-pane", "-p").splitlines()
        assert shown[0].startswith("turbo-queue monitor")
        assert folder in shown
        assert "  files      loading 0   ready 2   chosen 0   bad 0" in shown
        assert any(line.startswith("  handed over") and "▁" in line for line in shown)  # the sparkline, drawn
        assert sum(line.count("ready_") for line in shown) == 2  # the ls -C listing

        tmux_out("resize-window", "-x", "70", "-y", "20")
        def narrow() -> bool:
            shown = tmux_out("capture-pane", "-p").splitlines()
            return "  files      loading 0   ready 2   chosen 0   bad 0" in shown and all(len(l) < 70 for l in shown)
        wait_for(narrow, "the frame redrawn 70 columns wide", interval=0.05)

        tmux_out("send-keys", "C-c")
        wait_for(lambda: status.exists() and status.read_text().strip(), "the exit status", interval=0.05)
        assert status.read_text().strip() == "130"
        assert "backlog" not in tmux_out("capture-pane", "-p")  # back on the normal screen
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, env=env)


# -- peek ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["pickle", "json"])
def test_peek_shows_the_next_batch_without_taking_it(folder, codec):
    with Enqueuer(folder, max_batch_delay=3600, codec=codec) as enqueuer:
        enqueuer.put_many([{"id": i, "user": f"u{i}"} for i in range(30)])
        enqueuer.flush()
        enqueuer.put_many([{"id": i} for i in range(30, 35)])
    (first, _second) = sorted(listing(folder)["ready"], key=lambda n: os.stat(os.path.join(folder, n)).st_ctime_ns)
    before = snapshot(folder)
    result = run("peek", folder, "-n", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == os.path.join(folder, first)
    assert lines[1].startswith(f"  codec {codec}, 30 items, 0 acknowledged, created by ")
    assert lines[3:] == [f"       {i}  {{'id': {i}, 'user': 'u{i}'}}" for i in range(3)]
    doc = json.loads(run("peek", os.path.join(folder, first), "--json").stdout)
    assert doc["count"] == 30 and doc["acked"] == 0 and doc["codec"] == codec
    assert doc["items"] == [{"id": i, "user": f"u{i}"} for i in range(10)]
    quiet = run("peek", folder, "-q", "-n", "2")
    assert quiet.stdout.splitlines() == ["{'id': 0, 'user': 'u0'}", "{'id': 1, 'user': 'u1'}"]
    assert snapshot(folder) == before
    assert len(drain(folder)) == 35  # nothing was taken


def test_peek_at_a_batch_a_consumer_is_reading(folder, children):
    hand_over(folder, 40)
    consumer = children(CONSUMER, folder, ready="holding")  # 21 taken, 20 acknowledged in the file
    (chosen,) = listing(folder)["chosen"]
    result = run("peek", os.path.join(folder, chosen), "-n", "3")
    assert result.returncode == 0, result.stderr
    assert ", 40 items, 20 acknowledged," in result.stdout
    assert result.stdout.splitlines()[3:] == ["      20  20", "      21  21", "      22  22"]
    assert consumer.finish() == 0


def test_peek_refusals(folder, tmp_path, children):
    empty = run("peek", folder)
    assert empty.returncode == 0 and "no ready_ batch waits" in empty.stdout
    producer = children(PRODUCER, folder, ready="holding")
    (loading,) = listing(folder)["loading"]
    refused = run("peek", os.path.join(folder, loading))
    assert refused.returncode == 1 and "is being filled by its producer" in refused.stderr
    assert producer.finish() == 0
    text = tmp_path / "notes.txt"
    text.write_text("hello, I am not a batch\n" * 100)
    not_batch = run("peek", str(text))
    assert not_batch.returncode == 1
    assert not_batch.stderr.startswith(f"turbo-queue peek: {text}: not a turbo_queue batch file")
    other_db = tmp_path / "other.db"
    with sqlite3.connect(other_db) as conn:
        conn.execute("CREATE TABLE t (x)")
    other = run("peek", str(other_db))
    assert other.returncode == 1 and "not a turbo_queue batch file" in other.stderr
    missing = run("peek", str(tmp_path / "nope.db"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"turbo-queue peek: {tmp_path / 'nope.db'}: no such file or folder"


# -- permissions ----------------------------------------------------------------------------------------


def test_permission_errors(unprivileged, shared_tmp):
    private = os.path.join(shared_tmp, "private")
    os.mkdir(private, 0o700)
    hand_over(private, 3)
    result = run("stats", private, user=unprivileged)
    assert result.returncode == 3
    assert result.stderr.strip().startswith(f"turbo-queue stats: {private}: permission denied")
    assert run("monitor", "--once", private, user=unprivileged).returncode == 3
    assert "permission denied" in run("peek", private, user=unprivileged).stderr

    readable = os.path.join(shared_tmp, "readable")
    os.mkdir(readable, 0o755)
    (name,) = hand_over(readable, 4)
    os.chmod(os.path.join(readable, name), 0o600)
    peek = run("peek", os.path.join(readable, name), user=unprivileged)
    assert peek.returncode == 3
    assert peek.stderr.strip() == f"turbo-queue peek: {os.path.join(readable, name)}: permission denied"
    doc = run("stats", "--json", readable, user=unprivileged)
    assert doc.returncode == 3  # the document is printed all the same
    (q,) = json.loads(doc.stdout)["queues"]
    assert q["files"]["ready"] == 1 and q["uncounted_batches"] == 1 and q["backlog_items"] == 0
    assert q["unreadable"] == [f"{name}: permission denied"]
    assert "permission denied" in doc.stderr


# -- help ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["monitor", "stats", "exporter", "peek"])
def test_help_has_examples_exit_codes_and_the_common_options(command):
    for cli in ([*CLI], [SCRIPT]):
        result = subprocess.run([*cli, command, "--help"], capture_output=True, text=True,
                                env=dict(os.environ, COLUMNS="100"))
        assert result.returncode == 0 and result.stderr == ""
        assert result.stdout.startswith(f"usage: turbo-queue {command}")
        assert "examples:" in result.stdout and f"  turbo-queue {command} " in result.stdout
        assert "exit codes:" in result.stdout and "130  interrupted (Ctrl-C)" in result.stdout
        for option in ("--quiet", "--verbose"):
            assert option in result.stdout


def test_the_commands_are_listed():
    result = run("--help")
    text = words(result.stdout)
    for line in ("monitor a live view of queue folders", "stats the figures of queue folders once",
                 "exporter serve the figures of queue folders to Prometheus", "peek show the first items of a batch"):
        assert line in text


@pytest.mark.parametrize("args", [["stats"], ["stats", "--json", "--prometheus", "/tmp"], ["peek", "/tmp", "-n", "0"],
                                  ["monitor", "--sample", "-1", "/tmp"], ["exporter"]])
def test_bad_arguments(args):
    result = run(*args)
    assert result.returncode == 2 and "error:" in result.stderr and result.stdout == ""
