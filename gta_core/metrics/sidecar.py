"""The metrics sidecar: ``/metrics`` and ``/healthz`` for one supervisor and its workers.

Started by the supervisor (`host.MetricsHost`) as ``python -m gta_core.metrics.sidecar PID FD``
with the supervisor's settings in the environment; FD is the listening socket the supervisor
bound (it keeps the port across sidecar restarts). It keeps no state worth saving: SIGTERM
simply ends it, and it ends itself when its supervisor is gone (PDEATHSIG, plus a check of
its parent for the moment before that was armed). Each scrape builds a fresh registry: a
`MultiProcessCollector` over every process's files, and the queue gauges. Its HTTP server
(`server`) bounds connections, requests and responses for every route, the dashboard's too.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..config import Settings, load_settings
from .database_gauges import QueueCollector, QueueProbe
from .health import SupervisorStatus, evaluate
from .host import SETTINGS_ENV
from .hosts import AllowedHosts
from .multiproc import ENV, MultiprocDir
from .server import HttpError, Reply, Request, Server, text_reply

log = logging.getLogger("gta.metrics")

DATABASE_WAIT = 3.0  # longest a request waits for the database before answering without it
_PR_SET_PDEATHSIG = 1


class Sidecar:
    """What the HTTP server serves: `answer` routes a request."""

    def __init__(self, settings: Settings, directory: MultiprocDir, supervisor_pid: int) -> None:
        self.settings = settings
        self.directory = directory
        self.supervisor_pid = supervisor_pid
        self.probe = QueueProbe(settings)
        self.dashboard: Any = None  # a gta_core.dashboard.Dashboard when it is served

    def answer(self, request: Request) -> Reply:
        """``/metrics`` and ``/healthz``; every other path is the dashboard's, when it is served."""
        if request.path in ("/metrics", "/healthz"):
            if request.method != "GET":
                raise HttpError(405, f"{request.path} answers GET only", [("Allow", "GET")])
            if request.path == "/metrics":
                from prometheus_client import CONTENT_TYPE_LATEST
                return Reply(200, self.metrics(), CONTENT_TYPE_LATEST)
            healthy, body = self.health()
            return Reply(200 if healthy else 503, json.dumps(body).encode() + b"\n", "application/json")
        if self.dashboard is not None:
            from ..dashboard.service import serve
            return serve(request, self.dashboard)
        return text_reply(404, "not found: try /metrics or /healthz")

    def metrics(self) -> bytes:
        """A fresh registry per scrape: every process's files, then the queue gauges."""
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry()
        registry.register(ProcessFilesCollector(self.directory))
        registry.register(QueueCollector(self.probe, self.settings.queues, DATABASE_WAIT,
                                         self.settings.metrics_max_queues))
        return bytes(generate_latest(registry))

    def health(self) -> tuple[bool, dict[str, Any]]:
        status = SupervisorStatus.read(self.directory.path)
        database = self.probe.stats(DATABASE_WAIT).check
        return evaluate(status, os.getppid() == self.supervisor_pid, database, time.monotonic())


class ProcessFilesCollector:
    """prometheus_client's multiprocess merge of every process's files, read under the shared lock."""

    def __init__(self, directory: MultiprocDir) -> None:
        self.directory = directory

    def collect(self) -> Any:
        from prometheus_client.multiprocess import MultiProcessCollector

        with self.directory.reading() as files:
            return list(MultiProcessCollector.merge(files, accumulate=True))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    supervisor_pid = int(argv[0])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the supervisor decides
    _die_with_parent(supervisor_pid)
    settings = load_settings(json.loads(os.environ[SETTINGS_ENV]), environ={})
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s [metrics {os.getpid()}] %(name)s: %(message)s")
    listener = socket.socket(fileno=int(argv[1]))
    sidecar = Sidecar(settings, MultiprocDir(Path(os.environ[ENV])), supervisor_pid)
    from ..dashboard.service import mount
    sidecar.dashboard = mount(settings, sidecar.directory, supervisor_pid, ProcessFilesCollector(sidecar.directory))
    server = Server(listener, sidecar.answer, AllowedHosts(settings.metrics_bind, settings.allowed_hosts))
    threading.Thread(target=_watch_parent, args=(supervisor_pid,), name="gta-metrics-parent", daemon=True).start()
    log.info("serving /metrics and /healthz on %s%s", listener.getsockname()[:2],
             ", the dashboard at /" if sidecar.dashboard else "")
    server.serve_forever()
    return 0


def _die_with_parent(parent_pid: int) -> None:
    """SIGTERM (the default action: exit) when the supervisor dies; exit now if it already has."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass
    if os.getppid() != parent_pid:
        os._exit(0)


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
