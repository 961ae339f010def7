#!/usr/bin/env python3
"""kafka_broker: a genuine Apache Kafka broker on 127.0.0.1, for tests, CI and trying things out.

The jars (``org.apache.kafka:kafka_2.13`` and its runtime dependencies, plus a log4j 2 backend)
come from Maven Central through Maven, once, into a cache folder (``~/.cache/turbo_queue/kafka-4.4.0``,
or ``$TURBO_QUEUE_KAFKA_CACHE``). A broker is one KRaft node (broker and controller in one JVM)
with its storage, settings and log in a data folder of its own, on free ports.

    python tools/kafka_broker.py fetch                         # the jars, once (a minute or two)
    python tools/kafka_broker.py start --data-dir /tmp/kafka   # prints 127.0.0.1:PORT, leaves it running
    python tools/kafka_broker.py stop --data-dir /tmp/kafka

From Python (tests do this)::

    from tools import kafka_broker
    broker = kafka_broker.start("/tmp/kafka")    # formats the folder the first time
    broker.bootstrap                             # "127.0.0.1:PORT"
    broker.stop()                                # SIGTERM, waits; broker.kill() for SIGKILL
    broker = kafka_broker.start("/tmp/kafka")    # again: same data, same port

Needs Java (17 or newer) and, for the first fetch, Maven. Exit status: 0 done, 1 failed
(the broker's log tail is printed), 2 bad arguments or no Java/Maven, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Tuple

KAFKA_VERSION = "4.4.0"
LOG4J_VERSION = "2.24.3"
#: Environment variable that moves the jar cache.
CACHE_ENV = "TURBO_QUEUE_KAFKA_CACHE"
#: Java options: a small heap starts in a few seconds (48m was the smallest that started).
JAVA_OPTIONS = ["-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true"]
#: Files inside a data folder.
SETTINGS_FILE = "server.properties"
LOG4J_FILE = "log4j2.properties"
PORTS_FILE = "broker.json"
PID_FILE = "broker.pid"
LOG_FILE = "broker.log"
OUTPUT_FILE = "broker.out"
#: The JVM's class archive in the cache (AppCDS): later brokers start a few seconds sooner.
ARCHIVE_FILE = "kafka.jsa"
PENDING_ARCHIVE_FILE = "broker.archive"

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>turbo_queue</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>{log4j}</version>
    </dependency>
    <!-- Kafka logs through slf4j 1.7: the 1.x binding; log4j-slf4j2-impl would drop every line. -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

# shutdownHook = disable: otherwise log4j stops logging in the middle of the broker's shutdown.
LOG4J = """status = warn
shutdownHook = disable
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


class BrokerError(RuntimeError):
    """The broker could not be fetched, started or stopped; the message says why."""


class MissingTool(BrokerError):
    """Java or Maven is not installed, so no broker can run here."""


def cache_dir() -> Path:
    """The folder that holds the jars: ``$TURBO_QUEUE_KAFKA_CACHE`` or ``~/.cache/turbo_queue/kafka-4.4.0``."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "turbo_queue" / f"kafka-{KAFKA_VERSION}"


def java() -> str:
    """The ``java`` command to run; raises MissingTool when there is none."""
    home = os.environ.get("JAVA_HOME")
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return os.path.join(home, "bin", "java")
    found = shutil.which("java")
    if not found:
        raise MissingTool("no java on PATH: install a JDK 17 or newer (apt-get install openjdk-17-jre-headless)")
    return found


def fetched(cache: Optional[Path] = None) -> bool:
    """Whether the jars are already in the cache."""
    return (Path(cache or cache_dir()) / "libs" / ".complete").exists()


def fetch(cache: Optional[Path] = None, quiet: bool = True) -> Path:
    """Fetch the broker's jars into ``cache/libs`` unless they are there; returns that folder.

    Safe to call from several processes at once (a lock file: one fetches, the others wait).
    Raises MissingTool without Maven, BrokerError when Maven fails.
    """
    root = Path(cache or cache_dir())
    libs = root / "libs"
    if (libs / ".complete").exists():
        return libs
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (libs / ".complete").exists():
            return libs
        mvn = shutil.which("mvn")
        if not mvn:
            raise MissingTool("no mvn on PATH to fetch Kafka's jars: install Maven (apt-get install maven)")
        work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=root))
        try:
            (work / "pom.xml").write_text(POM.format(kafka=KAFKA_VERSION, log4j=LOG4J_VERSION))
            command = [mvn, "-B", "dependency:copy-dependencies", "-DincludeScope=runtime",
                       f"-DoutputDirectory={work / 'libs'}"]
            if quiet:
                command.insert(1, "-q")
            result = subprocess.run(command, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if result.returncode != 0 or not any((work / "libs").glob("kafka_2.13-*.jar")):
                raise BrokerError(f"mvn could not fetch kafka_2.13 {KAFKA_VERSION} (exit {result.returncode}):\n"
                                  + result.stdout[-4000:])
            (work / "libs" / ".complete").write_text(KAFKA_VERSION + "\n")
            if libs.exists():  # a half-fetched folder from an interrupted run
                shutil.rmtree(libs)
            os.rename(work / "libs", libs)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return libs


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cluster_id() -> str:
    # What kafka-storage random-uuid prints: 16 random bytes, URL-safe base64 without padding;
    # never one that starts with "-", which the StorageTool's argument parser takes for an option.
    while True:
        cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster.startswith("-"):
            return cluster


def _settings(data: Path, port: int, controller_port: int, extra: Dict[str, str]) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data / "logs"),
        "num.partitions": "1",
        # Topics are made on purpose: a consumer of a misspelt topic gets an error, not a new topic.
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # A broker started again after a kill waits until the controller fences its old
        # incarnation, a broker session timeout (9 s by default) after the kill.
        "broker.session.timeout.ms": "4000",
        "broker.heartbeat.interval.ms": "500",
        # The cleaner allocates this on the heap at start (128 MiB by default): too much for -Xmx128m.
        "log.cleaner.dedupe.buffer.size": str(4 * 1024 * 1024),
        "num.network.threads": "2",
        "num.io.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
        "log.flush.interval.messages": str(2**63 - 1),
    }
    settings.update(extra)
    return "".join(f"{key}={value}\n" for key, value in settings.items())


class Broker:
    """A running (or stopped) broker: its data folder, ports and process."""

    def __init__(self, data: Path, port: int, controller_port: int, process: subprocess.Popen,
                 archive: Optional[Path] = None) -> None:
        self.data = data
        self.port = port
        self.controller_port = controller_port
        self.process = process
        self._archive = archive  # a class archive this JVM writes at a clean exit (see _class_archive)

    @property
    def bootstrap(self) -> str:
        """The address for ``bootstrap.servers``: ``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the broker cleanly (SIGTERM) and wait; SIGKILL if it takes longer than ``timeout``."""
        if self.running():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._archive is not None and self._archive.exists():
            os.replace(self._archive, self._archive.parent / ARCHIVE_FILE)
        self._forget()

    def kill(self) -> None:
        """Kill the broker at once (SIGKILL), as a crash would; its data stays."""
        if self.running():
            self.process.kill()
        self.process.wait()
        if self._archive is not None and self._archive.exists():
            self._archive.unlink()  # half-written, or from before the kill: not to be used
        self._forget()

    def start(self, timeout: float = 60.0) -> "Broker":
        """Start this broker again on the same data folder and ports; returns the new Broker."""
        if self.running():
            raise BrokerError(f"the broker of {self.data} is still running (pid {self.pid})")
        return start(self.data, port=self.port, timeout=timeout)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the broker's log and of its standard output."""
        return _tail(self.data, lines)

    def _forget(self) -> None:
        if self._archive is not None:
            (self.data / PENDING_ARCHIVE_FILE).unlink(missing_ok=True)
            self._archive = None
        pid_file = self.data / PID_FILE
        if pid_file.exists() and pid_file.read_text().strip() == str(self.process.pid):
            pid_file.unlink()

    def __enter__(self) -> "Broker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running() else "stopped"
        return f"Broker({self.bootstrap}, {self.data}, {state})"


def _tail(data: Path, lines: int) -> str:
    parts = []
    for name in (LOG_FILE, OUTPUT_FILE):
        path = data / name
        if path.exists():
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path} (last {len(text)} lines)\n" + "\n".join(text))
    return "\n".join(parts) or f"(no log in {data})"


def _storage_template(libs: Path) -> Path:
    # One formatted, empty storage folder in the cache, copied into each new data folder: the
    # StorageTool is a JVM start of its own (seconds on a busy machine). Brokers made from one
    # template share a cluster id, which matters to nothing on separate ports.
    template = libs.parent / "storage-template"
    if (template / ".complete").exists():
        return template / "logs"
    with open(libs.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (template / ".complete").exists():
            return template / "logs"
        shutil.rmtree(template, ignore_errors=True)
        template.mkdir(parents=True)
        (template / SETTINGS_FILE).write_text(_settings(template, free_port(), free_port(), {}))
        (template / LOG4J_FILE).write_text(LOG4J.format(log=template / LOG_FILE))
        result = subprocess.run(
            [java(), *JAVA_OPTIONS, f"-Dlog4j2.configurationFile={template / LOG4J_FILE}", "-cp", f"{libs}/*",
             "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(template / SETTINGS_FILE)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        if result.returncode != 0:
            raise BrokerError(f"formatting a storage folder failed (exit {result.returncode}):\n{result.stdout[-4000:]}")
        (template / ".complete").write_text("")
    return template / "logs"


def _format(data: Path, libs: Path, port: int, controller_port: int, extra: Dict[str, str]) -> None:
    template = _storage_template(libs)
    data.mkdir(parents=True, exist_ok=True)
    (data / SETTINGS_FILE).write_text(_settings(data, port, controller_port, extra))
    (data / LOG4J_FILE).write_text(LOG4J.format(log=data / LOG_FILE))
    shutil.rmtree(data / "logs", ignore_errors=True)
    shutil.copytree(template, data / "logs")
    (data / PORTS_FILE).write_text(json.dumps({"port": port, "controller_port": controller_port}) + "\n")


def _die_with_parent() -> None:
    # Runs in the child before exec: SIGTERM to the broker when the process that started it ends
    # (a test run killed hard must not leave brokers behind). Linux's PR_SET_PDEATHSIG.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)


def _class_archive(libs: Path) -> Tuple[List[str], Optional[Path]]:
    # The JVM options that use the class archive, or, while there is none, make this JVM write
    # one at its clean exit (Broker.stop() moves it into place; a killed JVM writes nothing).
    archive = libs.parent / ARCHIVE_FILE
    if archive.exists():
        return [f"-XX:SharedArchiveFile={archive}", "-Xshare:auto"], None
    pending = libs.parent / f".{ARCHIVE_FILE}.{uuid.uuid4().hex}"
    return [f"-XX:ArchiveClassesAtExit={pending}"], pending


def start(
    data: "os.PathLike[str] | str",
    *,
    port: Optional[int] = None,
    settings: Optional[Dict[str, str]] = None,
    timeout: float = 60.0,
    cache: Optional[Path] = None,
    die_with_parent: bool = True,
) -> Broker:
    """Start a broker on ``data`` and wait until it answers; returns it.

    An empty (or missing) folder is formatted first, on ``port`` (a free one if None) and a free
    controller port, with ``settings`` added to server.properties; a folder formatted before
    starts again with its data and its ports. With ``die_with_parent`` the broker gets SIGTERM
    when this process ends. Raises MissingTool without Java (or Maven for a first fetch), and
    BrokerError, with the log's tail, when it does not answer within ``timeout`` seconds.
    """
    folder = Path(data).resolve()
    libs = fetch(cache)
    if (folder / PORTS_FILE).exists():
        ports = json.loads((folder / PORTS_FILE).read_text())
        if port is not None and port != ports["port"]:
            raise BrokerError(f"{folder} was formatted for port {ports['port']}, not {port}")
        port, controller_port = int(ports["port"]), int(ports["controller_port"])
        if settings:
            raise BrokerError(f"{folder} is formatted already: its settings are in {folder / SETTINGS_FILE}")
    else:
        port = port or free_port()
        controller_port = free_port()
        while controller_port == port:
            controller_port = free_port()
        _format(folder, libs, port, controller_port, settings or {})
    pid_file = folder / PID_FILE
    if pid_file.exists():
        old = int(pid_file.read_text().strip() or 0)
        if old and _alive(old):
            raise BrokerError(f"a broker already runs on {folder} (pid {old}); stop it first")
    sharing, archive = _class_archive(libs)
    with open(folder / OUTPUT_FILE, "ab") as output:
        process = subprocess.Popen(
            [java(), *JAVA_OPTIONS, *sharing, f"-Dlog4j2.configurationFile={folder / LOG4J_FILE}",
             f"-Dkafka.logs.dir={folder}", "-cp", f"{libs}/*", "kafka.Kafka", str(folder / SETTINGS_FILE)],
            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal that started it does not reach it
            preexec_fn=_die_with_parent if die_with_parent else None,
        )
    pid_file.write_text(f"{process.pid}\n")
    if archive is not None:
        (folder / PENDING_ARCHIVE_FILE).write_text(f"{archive}\n")  # for stop_folder()
    broker = Broker(folder, port, controller_port, process, archive)
    try:
        wait_ready(broker.bootstrap, timeout, process)
    except BrokerError as error:
        broker.kill()
        raise BrokerError(f"{error}\n{broker.log_tail()}") from None
    except BaseException:
        broker.kill()
        raise
    return broker


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def answers(bootstrap: str, timeout: float = 2.0) -> bool:
    """Whether a Kafka broker at ``host:port`` answers a metadata request within ``timeout``."""
    try:
        from confluent_kafka.admin import AdminClient
    except ImportError:
        return _api_versions(bootstrap, timeout)
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": 1000,
                         "log_level": 0, "logger": _quiet})
    try:
        return bool(admin.list_topics(timeout=timeout).brokers)
    except Exception:  # KafkaException while it is not up yet; nothing else is expected here
        return False


class _Quiet:
    """A logger for librdkafka that drops its lines: a broker still starting refuses connections."""

    def log(self, *args: object, **kwargs: object) -> None:
        pass

    debug = info = warning = error = critical = exception = log


_quiet = _Quiet()


def _api_versions(bootstrap: str, timeout: float) -> bool:
    # A Kafka ApiVersions v0 request: size, api_key 18, api_version 0, correlation id, client id.
    host, _, port = bootstrap.rpartition(":")
    client = b"turbo_queue"
    body = struct.pack(">hhih", 18, 0, 1, len(client)) + client
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as conn:
            conn.sendall(struct.pack(">i", len(body)) + body)
            head = conn.recv(10)
    except OSError:
        return False
    return len(head) >= 10 and struct.unpack(">ih", head[4:10]) == (1, 0)


def wait_ready(bootstrap: str, timeout: float, process: Optional[subprocess.Popen] = None) -> None:
    """Wait until the broker at ``bootstrap`` answers; BrokerError after ``timeout`` or if it exits."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise BrokerError(f"the broker for {bootstrap} exited with {process.returncode} while starting")
        if answers(bootstrap, timeout=1.0):
            return
        if time.monotonic() > deadline:
            raise BrokerError(f"the broker for {bootstrap} did not answer within {timeout:g} s")
        time.sleep(0.2)


def stop_folder(data: "os.PathLike[str] | str", timeout: float = 30.0) -> bool:
    """Stop the broker whose PID is recorded in ``data`` (SIGTERM, then SIGKILL); False if none ran."""
    pid_file = Path(data) / PID_FILE
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().strip() or 0)
    if not pid or not _alive(pid) or not _is_broker(pid, Path(data)):
        pid_file.unlink()
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    killed = _alive(pid)
    if killed:
        os.kill(pid, signal.SIGKILL)
    pending_file = Path(data) / PENDING_ARCHIVE_FILE
    if pending_file.exists():
        pending = Path(pending_file.read_text().strip())
        if pending.exists():
            if killed:
                pending.unlink()
            else:
                os.replace(pending, pending.parent / ARCHIVE_FILE)
        pending_file.unlink()
    pid_file.unlink()
    return True


def _is_broker(pid: int, data: Path) -> bool:
    # A recorded PID may have been reused by another process since: check its command line.
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"kafka.Kafka" in command and str((data / SETTINGS_FILE).resolve()).encode() in command


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="kafka_broker.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_p = commands.add_parser("fetch", help="fetch the jars into the cache (once)")
    fetch_p.add_argument("--cache", type=Path, help=f"jar cache (default ${CACHE_ENV} or {cache_dir()})")
    start_p = commands.add_parser("start", help="start a broker in the background and print its address")
    start_p.add_argument("--data-dir", type=Path, required=True, help="its data folder (formatted if empty)")
    start_p.add_argument("--port", type=int, help="listener port (default: a free one; kept in the data folder)")
    start_p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait until it answers")
    start_p.add_argument("--cache", type=Path)
    stop_p = commands.add_parser("stop", help="stop the broker of a data folder by its recorded PID")
    stop_p.add_argument("--data-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            print(fetch(args.cache, quiet=False))
        elif args.command == "start":
            broker = start(args.data_dir, port=args.port, timeout=args.timeout, cache=args.cache,
                           die_with_parent=False)
            print(broker.bootstrap)
            print(f"broker pid {broker.pid}, log {broker.data / LOG_FILE}; stop it with: "
                  f"python {sys.argv[0]} stop --data-dir {broker.data}", file=sys.stderr)
        else:
            if not stop_folder(args.data_dir):
                print(f"no broker was running on {args.data_dir}", file=sys.stderr)
    except MissingTool as error:
        print(f"kafka_broker: {error}", file=sys.stderr)
        return 2
    except BrokerError as error:
        print(f"kafka_broker: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
