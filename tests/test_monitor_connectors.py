"""The Kafka connectors in ``stats``, ``monitor`` and the exporter, from status files written by the
real ``write_status`` in processes of their own (no broker needed: the connectors against a real
broker are in tests/kafka/test_kafka_status.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Dict, Iterator, List

import pytest

from turbo_queue import _status
from turbo_queue.monitor import read_connectors

from tests.support.commands import has, m, run

# Writes the status documents it is given on stdin, one JSON [kind, doc] a line, with the real
# write_status, as a connector does; ["remove", kind] is a clean stop's remove_status.
WRITER = """
import json, sys
from turbo_queue.kafka.status import remove_status, write_status
for line in sys.stdin:
    kind, doc = json.loads(line)
    if kind == "remove":
        remove_status(sys.argv[1], doc)
    else:
        write_status(sys.argv[1], kind, doc)
    print("done", flush=True)
"""


class Writer:
    """A process that writes status files into ``folder`` when told to."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.proc = subprocess.Popen([sys.executable, "-c", WRITER, folder], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid

    def _say(self, *what: Any) -> None:
        self.proc.stdin.write(json.dumps(what) + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        assert self.proc.stdout.readline().strip() == "done"  # type: ignore[union-attr]

    def write(self, kind: str, doc: Dict[str, Any]) -> str:
        self._say(kind, doc)
        return _status.status_name(kind, self.pid)

    def remove(self, kind: str) -> None:
        self._say("remove", kind)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(timeout=30)
        self.proc.stdout.close()  # type: ignore[union-attr]


@pytest.fixture
def writers() -> Iterator[Any]:
    started: List[Writer] = []

    def start(folder: str) -> Writer:
        writer = Writer(folder)
        started.append(writer)
        return writer

    yield start
    for writer in started:
        writer.close()


def source_doc(**changes: Any) -> Dict[str, Any]:
    """A source's status document, with every field KafkaSource writes."""
    now = time.time()
    doc: Dict[str, Any] = {
        "bootstrap_servers": "127.0.0.1:9092", "group": "pipeline", "topics": ["events"],
        "started": now - 60, "updated": now, "paused": True,
        "partitions": [
            {"topic": "events", "partition": 0, "committed": 1200, "high_watermark": 5000, "lag": 3800, "paused": True},
            {"topic": "events", "partition": 1, "committed": None, "high_watermark": 700, "lag": None, "paused": True},
        ],
        **dict(zip(_status.COUNTS["source"], (1200, 7, 1, 2, 0))),
    }
    doc.update(changes)
    return doc


def sink_doc(**changes: Any) -> Dict[str, Any]:
    """A sink's status document, with every field KafkaSink writes."""
    now = time.time()
    doc: Dict[str, Any] = {
        "bootstrap_servers": "127.0.0.1:9092", "topic": "results", "dead_letter": "results-dead",
        "started": now - 30, "updated": now, "in_flight": 250, "last_error": "Broker: Message size too large",
        **dict(zip(_status.COUNTS["sink"], (5250, 5000, 12, 3, 4, 0, 1))),
    }
    doc.update(changes)
    return doc


def stats_json(folder: str, user: Any = None) -> Dict[str, Any]:
    result = run("stats", "--json", folder, user=user)
    assert result.returncode == 0, result.stderr
    (queue,) = json.loads(result.stdout)["queues"]
    return queue  # type: ignore[no-any-return]


def test_stats_shows_a_source_and_a_sink_as_text_json_and_prometheus(folder, writers):
    from prometheus_client.parser import text_string_to_metric_families

    source, sink = writers(folder), writers(folder)
    source.write("source", source_doc())
    sink.write("sink", sink_doc())
    files = sorted(os.listdir(os.path.join(folder, ".connectors")))

    q = stats_json(folder)
    first, second = q["connectors"]
    assert first["kind"] == "source" and second["kind"] == "sink"
    assert first["connector"] == f"source-{source.pid}" and first["pid"] == source.pid
    assert first["group"] == "pipeline" and first["topics"] == ["events"] and first["paused"] is True
    assert first["lag"] == 3800
    assert first["partitions"] == source_doc()["partitions"]
    assert (first["messages_in"], first["commits"], first["pauses"], first["set_aside"],
            first["dead_lettered"]) == (1200, 7, 1, 2, 0)
    assert 0 <= first["updated_age_seconds"] < 30
    assert second["connector"] == f"sink-{sink.pid}" and second["topic"] == "results"
    assert second["dead_letter"] == "results-dead" and second["in_flight"] == 250
    assert (second["taken"], second["delivered"], second["errors"], second["set_aside"]) == (5250, 5000, 4, 0)
    assert second["last_error"] == "Broker: Message size too large"
    assert q["files"] == {"loading": 0, "ready": 0, "chosen": 0, "bad": 0}  # the status folder is no batch
    assert q["unreadable"] == []

    text = run("stats", folder)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert any(line.startswith(f"  source     pid {source.pid}   group pipeline   topics events at 127.0.0.1:9092")
               for line in lines)
    assert "1,200 messages in   7 commits   lag 3,800   2 set aside   0 dead-lettered   1 pause" in text.stdout
    assert "paused: the folder's backlog is at its limit" in text.stdout
    assert any(line.split() == ["events", "[0]", "1,200", "5,000", "3,800", "paused"] for line in lines)
    assert any(line.split() == ["events", "[1]", "?", "700", "?", "paused"] for line in lines)
    assert any(line.startswith(f"  sink       pid {sink.pid}   topic results at 127.0.0.1:9092 (dead letters to "
                               f"results-dead)") for line in lines)
    assert "250 in flight   5,000 delivered   4 errors   0 set aside   1 dead-lettered   3 retried" in text.stdout
    assert "last error: Broker: Message size too large" in text.stdout

    prom = run("stats", "--prometheus", folder)
    assert prom.returncode == 0, prom.stderr
    families = {f.name: f for f in text_string_to_metric_families(prom.stdout)}
    for family in families.values():
        assert f"# HELP {family.name}" in prom.stdout
        assert family.type == ("counter" if f"# TYPE {family.name}_total counter" in prom.stdout else "gauge")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    src = {"connector": f"source-{source.pid}", "group": "pipeline"}
    part = dict(src, topic="events", partition="0")
    assert samples[m("turbo_queue_kafka_source_lag_messages", folder, **part)] == 3800
    assert samples[m("turbo_queue_kafka_source_committed_offset", folder, **part)] == 1200
    assert samples[m("turbo_queue_kafka_source_high_watermark_offset", folder, **part)] == 5000
    assert samples[m("turbo_queue_kafka_source_paused", folder, **part)] == 1
    assert samples[m("turbo_queue_kafka_source_paused", folder, **dict(part, partition="1"))] == 1
    assert m("turbo_queue_kafka_source_lag_messages", folder, **dict(part, partition="1")) not in samples  # unknown
    assert samples[m("turbo_queue_kafka_source_consumed_messages_total", folder, **src)] == 1200
    assert samples[m("turbo_queue_kafka_source_commits_total", folder, **src)] == 7
    assert families["turbo_queue_kafka_source_commits"].type == "counter"
    snk = {"connector": f"sink-{sink.pid}", "topic": "results"}
    assert samples[m("turbo_queue_kafka_sink_in_flight_messages", folder, **snk)] == 250
    assert samples[m("turbo_queue_kafka_sink_delivered_messages_total", folder, **snk)] == 5000
    assert samples[m("turbo_queue_kafka_sink_errors_total", folder, **snk)] == 4
    assert samples[m("turbo_queue_kafka_sink_set_aside_messages_total", folder, **snk)] == 0
    assert samples[m("turbo_queue_kafka_connectors", folder, kind="source")] == 1
    assert samples[m("turbo_queue_kafka_connectors", folder, kind="sink")] == 1
    started = samples[m("turbo_queue_kafka_connector_start_time_seconds", folder, **snk)]
    assert started == pytest.approx(time.time() - 30, abs=20)
    assert sorted(os.listdir(os.path.join(folder, ".connectors"))) == files  # read, not changed


def test_a_connector_that_is_gone_is_not_shown_and_the_monitor_leaves_its_file(folder, writers):
    killed = writers(folder)
    name = killed.write("source", source_doc())
    killed.kill()  # no clean stop: its file stays behind
    path = os.path.join(folder, ".connectors", name)
    assert stats_json(folder)["connectors"] == []
    assert "source" not in run("stats", folder).stdout
    assert os.path.exists(path)  # only read: the monitor removes nothing, whoever runs it

    # Killed, and not yet waited for by its parent (a zombie): gone too.
    zombie = writers(folder)
    zombie.write("sink", sink_doc())
    zombie.proc.kill()
    deadline = time.monotonic() + 30
    while open(f"/proc/{zombie.pid}/stat").read().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline, "the killed writer did not become a zombie"
        time.sleep(0.01)
    assert stats_json(folder)["connectors"] == []
    zombie.proc.wait()

    # Its pid taken by a process that started after the file was last written: not it either.
    later = writers(folder)
    reused = os.path.join(folder, ".connectors", later.write("sink", sink_doc()))
    an_hour_ago = time.time() - 3600
    os.utime(reused, (an_hour_ago, an_hour_ago))
    assert stats_json(folder)["connectors"] == []
    assert read_connectors(folder) == []

    # A connector starting on the folder clears what the gone ones left.
    fresh = writers(folder)
    fresh.write("source", source_doc())
    assert not os.path.exists(path) and not os.path.exists(reused)
    (shown,) = stats_json(folder)["connectors"]
    assert shown["pid"] == fresh.pid
    fresh.remove("source")  # a clean stop
    assert stats_json(folder)["connectors"] == []


def test_a_status_file_that_cannot_be_read_is_said(folder, writers):
    writer = writers(folder)
    name = writer.write("source", source_doc())
    with open(os.path.join(folder, ".connectors", name), "w") as broken:
        broken.write('{"group": "pipel')
    q = stats_json(folder)
    assert q["connectors"] == []
    (problem,) = q["unreadable"]
    assert problem.startswith(f".connectors/{name}: not a status document")
    assert f"unreadable .connectors/{name}: not a status document" in run("stats", folder).stdout


def test_a_user_who_may_only_read_the_folder_sees_the_connectors(unprivileged, shared_tmp, writers):
    if os.geteuid() != 0:
        pytest.skip("not running as root: no other user to run the monitor as")
    folder = os.path.join(shared_tmp, "queue")
    os.mkdir(folder, 0o755)
    os.umask(old := os.umask(0o022))
    assert old & 0o004 == 0, "this test needs a umask that lets others read new files"
    writer = writers(folder)
    writer.write("sink", sink_doc())
    gone = writers(folder)
    gone_path = os.path.join(folder, ".connectors", gone.write("source", source_doc()))
    gone.kill()
    q = stats_json(folder, user=unprivileged)
    (sink,) = q["connectors"]
    assert sink["pid"] == writer.pid and sink["delivered"] == 5000
    assert os.path.exists(gone_path)

    os.chmod(os.path.join(folder, ".connectors"), 0o700)  # a status folder this user may not read: said
    q = stats_json(folder, user=unprivileged)
    assert q["connectors"] == [] and q["unreadable"] == [".connectors: permission denied"]


def test_monitor_once_and_the_live_view_show_the_connectors(folder, writers, terminal):
    source = writers(folder)
    source.write("source", source_doc())
    once = run("monitor", "--once", folder)
    assert once.returncode == 0, once.stderr
    assert f"  source     pid {source.pid}   group pipeline" in once.stdout
    assert "paused: the folder's backlog is at its limit" in once.stdout

    term = terminal("monitor", folder)
    term.wait_for(has(f"source     pid {source.pid}   group pipeline"), "the source")
    source.write("source", source_doc(paused=False, partitions=[
        {"topic": "events", "partition": 0, "committed": 4000, "high_watermark": 5000, "lag": 1000, "paused": False}]))
    screen = term.wait_for(has("lag 1,000"), "the source's new lag")  # read again on the clock: no event says so
    assert not any("paused" in line for line in screen)
    source.remove("source")
    term.wait_for(lambda s: has("files      loading 0")(s) and not has("source     pid")(s), "the source to go")
    term.send(b"q")
    assert term.wait_exit() == 0


def test_the_exporter_follows_the_connectors(folder, writers, exporters):
    exporter = exporters(folder)
    assert exporter.metrics()[m("turbo_queue_kafka_connectors", folder, kind="source")] == 0
    source = writers(folder)
    source.write("source", source_doc())
    part = {"connector": f"source-{source.pid}", "group": "pipeline", "topic": "events", "partition": "0"}
    lag = m("turbo_queue_kafka_source_lag_messages", folder, **part)
    exporter.wait_for(lambda x: x.get(lag) == 3800, "the source's lag")
    source.write("source", source_doc(partitions=[dict(source_doc()["partitions"][0], lag=10, paused=False)]))
    metrics = exporter.wait_for(lambda x: x.get(lag) == 10, "the source's new lag")
    assert metrics[m("turbo_queue_kafka_source_paused", folder, **part)] == 0
    source.kill()
    metrics = exporter.wait_for(lambda x: lag not in x, "the killed source to go")
    assert metrics[m("turbo_queue_kafka_connectors", folder, kind="source")] == 0
    assert exporter.stop(signal.SIGTERM) == 0
