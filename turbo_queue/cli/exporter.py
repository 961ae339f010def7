"""``turbo-queue exporter``: serve the figures of queue folders to Prometheus over HTTP."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
import time
import urllib.parse
from typing import TYPE_CHECKING

from . import _exit
from ._args import add_command, parse_listen, unique_folders

if TYPE_CHECKING:
    import http.server

    from ..monitor import Session

log = logging.getLogger("turbo_queue")


DESCRIPTION = f"""\
Serves the figures of each queue at http://HOST:PORT/metrics in the Prometheus text format, one
`queue` label per folder, kept up to date from filesystem events; the *_total counters count from
when the exporter started. The Kafka connectors running on a folder add turbo_queue_kafka_* metrics
(a source's lag per partition, paused or not; a sink's in-flight and delivered counts). It listens on 127.0.0.1 (this machine only) unless told otherwise. A
folder that does not exist yet is reported as turbo_queue_folder_exists 0 until it appears. Stops on
Ctrl-C (exit {_exit.INTERRUPTED}) or SIGTERM (exit {_exit.OK}).
"""
EXAMPLES = """\
  turbo-queue exporter /var/queues/events
  turbo-queue exporter /var/queues/in /var/queues/out --listen 127.0.0.1:9464
  turbo-queue exporter /var/queues/events --listen 0.0.0.0:9464    every interface
  curl -s http://127.0.0.1:9464/metrics
"""
EXITS = (
    (_exit.OK, "stopped by SIGTERM"),
    (_exit.BAD_DATA, "the address cannot be used (in use, or not this machine's)"),
    (_exit.USAGE, "bad arguments (a --listen that is not HOST:PORT)"),
    (_exit.PERMISSION, "permission denied to listen there (a port below 1024)"),
    (_exit.INTERRUPTED, "interrupted (Ctrl-C)"),
)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = add_command(commands, common, "exporter", help="serve the figures of queue folders to Prometheus over HTTP",
                    description=DESCRIPTION, examples=EXAMPLES, exits=EXITS)
    p.add_argument("folders", nargs="+", metavar="FOLDER", help="queue folder(s) to serve")
    p.add_argument("--listen", default="127.0.0.1:9464", metavar="HOST:PORT",
                   help="address to listen on (default 127.0.0.1:9464; [::1]:PORT for IPv6; port 0: any free port)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..monitor import TAKE_EVENTS_EVERY, TICK, Session, plural, snapshot

    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        print(f"turbo-queue exporter: --listen {exc}", file=sys.stderr)
        return _exit.USAGE
    folders = unique_folders(args.folders)
    for one in [snapshot(folder) for folder in folders]:
        if not one.exists:
            log.warning("turbo-queue exporter: %s does not exist (yet); it is reported as "
                        "turbo_queue_folder_exists 0 until it appears", one.folder)
        elif one.error:
            log.warning("turbo-queue exporter: %s: %s", one.folder, one.error)
    session = Session(folders)
    try:
        server = _metrics_server(session, host, port, args.verbose > 0)
    except OSError as exc:
        reason = "permission denied" if isinstance(exc, PermissionError) else (exc.strerror or str(exc))
        print(f"turbo-queue exporter: cannot listen on {args.listen}: {reason}", file=sys.stderr)
        return _exit.PERMISSION if isinstance(exc, PermissionError) else _exit.BAD_DATA
    old_term = signal.signal(signal.SIGTERM, _exit.on_sigterm)
    thread = threading.Thread(target=server.serve_forever, name="turbo-queue-exporter", daemon=True)
    try:
        session.start()
        session.figures()  # the first look before serving: what was there before is not counted as new
        thread.start()
        bound_host, bound_port = str(server.server_address[0]), server.server_address[1]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        if not args.quiet:
            print(f"turbo-queue exporter: serving {plural(len(folders), 'queue')} at "
                  f"http://{shown}:{bound_port}/metrics", flush=True)
        next_tick = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_tick:
                session.tick()
                next_tick = now + TICK
            session.wait(min(TAKE_EVENTS_EVERY, next_tick - now), events=False)  # a scrape takes in new events
            session.process()
    except _exit.Terminated:
        return _exit.OK
    finally:
        signal.signal(signal.SIGTERM, old_term)
        if thread.is_alive():
            server.shutdown()
        server.server_close()
        session.stop()


def _metrics_server(session: Session, host: str, port: int, verbose: bool) -> http.server.ThreadingHTTPServer:
    """An HTTP server (not yet serving) that answers /metrics with the session's figures."""
    import http.server

    from ..monitor import prometheus_text

    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "turbo-queue-exporter"

        def do_GET(self) -> None:
            self._answer(send_body=True)

        def do_HEAD(self) -> None:
            self._answer(send_body=False)

        def _answer(self, send_body: bool) -> None:
            path = urllib.parse.urlsplit(self.path).path
            if path == "/metrics":
                body = prometheus_text(session.figures()).encode()
                kind = "text/plain; version=0.0.4; charset=utf-8"
                status = 200
            elif path == "/":
                body = b"turbo-queue exporter: the metrics are at /metrics\n"
                kind, status = "text/plain; charset=utf-8", 200
            else:
                body = b"not found: the metrics are at /metrics\n"
                kind, status = "text/plain; charset=utf-8", 404
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            if verbose:
                log.info("turbo-queue exporter: %s %s", self.address_string(), format % args)

    class Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True

    return Server((host, port), Handler)
