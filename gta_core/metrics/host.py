"""The supervisor's half of the metrics.

`MetricsHost.open` must run before anything in the supervisor imports prometheus_client
(plugins are loaded by ``Supervisor.check``), so that this process and every worker it spawns
write multiprocess files. Then, from the supervisor's main loop, `tick` records how many
workers are busy, idle or down (it alone can read their shared ``running`` arrays), writes the
status file ``/healthz`` reads, retires dead workers' files and keeps the sidecar running.

The supervisor binds the metrics address itself, in `bind`, and hands the listening socket to
each sidecar it starts: a second supervisor on a host whose port is taken fails at start with
one line naming the address and the setting to change (not a sidecar retrying every minute
while its metrics are silently missing), a sidecar restart never loses the port to another
process, and ``HOST:0`` means "any free port", logged once bound.

The sidecar is a plain ``python -m gta_core.metrics.sidecar`` child rather than a
``multiprocess`` one: it needs no shared memory and none of the worker's modules, and its
command line tells it apart from the workers (``gta-worker`` in ``ps``) at a glance.
"""
from __future__ import annotations

import dataclasses
import errno
import functools
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any, Protocol

from ..config import Settings
from ..errors import GTAError
from ..schedules import Periodic
from . import catalog
from .health import SupervisorStatus
from .multiproc import ENV, MultiprocDir

log = logging.getLogger("gta.metrics")

SETTINGS_ENV = "GTA_METRICS_SIDECAR_SETTINGS"
OBSERVE_EVERY = 0.25  # seconds between worker-state updates, however busy the main loop is
STATUS_EVERY = 1.0
SIDECAR_STABLE_AFTER = 60.0
SIDECAR_MAX_DELAY = 60.0
#: the first sidecar waits for the workers to boot, this long at most (`_sidecar_may_start`)
FIRST_SIDECAR_WAIT = 2.0


class WorkerSlotView(Protocol):
    """What `tick` reads of a supervisor's worker slot."""

    process: Any
    channel: Any


RESTART_REASONS = ("crashed", "killed", "recycled")


def restart_reason(exitcode: int | None) -> str:
    """``recycled`` (exited 0 after --max-tasks-per-worker), ``killed`` (a signal) or ``crashed``."""
    if exitcode == 0:
        return "recycled"
    return "killed" if exitcode is not None and exitcode < 0 else "crashed"


class MetricsHost:
    """The supervisor's side of metrics: the prometheus multiprocess directory its workers write
    to, the worker states and restarts it publishes, and the sidecar process it keeps running."""

    def __init__(self, settings: Settings, directory: MultiprocDir | None = None) -> None:
        """``directory``: one made for this supervisor already (`gta-supervisor` makes it before
        it starts the fork server, which imports prometheus_client in its mode); `open` makes
        one otherwise. Either way `close` removes it."""
        self.settings = settings
        self.directory = directory
        self._previous_env: str | None = None
        self._unretired: list[int] = []
        self.listener: socket.socket | None = None
        self.address = settings.metrics_bind  # the bound HOST:PORT once open
        self._sidecar: subprocess.Popen[bytes] | None = None
        self._sidecar_started = 0.0
        self._sidecar_failures = 0
        self._sidecar_due = 0.0
        self._first_sidecar_by = 0.0
        self._next_observe = 0.0
        self._next_status = 0.0
        self._down_since: float | None = None
        self._status_written: tuple[int, int, float | None, bool, dict[str, Any]] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> None:
        """Create the multiprocess directory and export it, before prometheus_client is imported."""
        if not self.settings.metrics:
            return
        client = sys.modules.get("prometheus_client.values")
        if client is not None and not getattr(client.ValueClass, "_multiprocess", False):
            log.warning("prometheus_client was imported before the supervisor started: metrics "
                        "recorded in this process will not reach the sidecar")
        if self.directory is None:
            self.directory = MultiprocDir.create()
        self._previous_env = os.environ.get(ENV)
        os.environ[ENV] = str(self.directory.path)

    def bind(self) -> None:
        """Take the metrics address (a GTAError when it is taken), after the plugins and the
        database checked out: those errors come first."""
        if self.directory is None:
            return
        self.listener = listen(self.settings.metrics_bind)
        self._first_sidecar_by = time.monotonic() + FIRST_SIDECAR_WAIT
        host, port = self.listener.getsockname()[:2]
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def close(self) -> None:
        """Stop the sidecar, restore the environment, remove the directory."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if self.directory is None:
            return
        self._stop_sidecar()
        if self._previous_env is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = self._previous_env
        self.directory.remove()
        self.directory = None

    # -- called by the supervisor -------------------------------------------------------------
    def worker_exited(self, pid: int) -> None:
        """A reaped worker: fold its files now (or on a later tick if a scrape is reading)."""
        if self.directory is not None and not self.directory.retire(pid):
            self._unretired.append(pid)

    def worker_restarted(self, exitcode: int | None) -> None:
        if self.directory is not None:
            self._metrics.restarts.labels(reason=restart_reason(exitcode)).inc()

    def publish_catalog(self, runtime: Any, periodics: Sequence[Periodic]) -> None:
        """Tell the sidecar's dashboard what this supervisor runs (`catalog`): from ``runtime``
        (its loaded plugins) and its checked ``periodics``."""
        if self.directory is not None and self.settings.dashboard:
            catalog.write(catalog.build(runtime, periodics), self.directory.path)

    def services(self, names: Sequence[str]) -> None:
        """Export the service-restart counter at 0 for each of the supervisor's loops."""
        if self.directory is not None:
            for name in names:
                self._metrics.service_restarts.labels(service=name)

    def service_restarted(self, name: str) -> None:
        if self.directory is not None:
            self._metrics.service_restarts.labels(service=name).inc()

    def tick(self, slots: Sequence[WorkerSlotView], stopping: bool,
             services: dict[str, dict[str, Any]] | None = None) -> None:
        """From every pass of the main loop; does its work at most every `OBSERVE_EVERY` seconds.
        ``services`` is `ServiceRunner.health`: how the supervisor's loops are doing."""
        now = time.monotonic()
        if self.directory is None or now < self._next_observe:
            return
        self._next_observe = now + OBSERVE_EVERY
        self._unretired = [pid for pid in self._unretired if not self.directory.retire(pid)]
        live = [slot for slot in slots if slot.process is not None]
        busy = sum(1 for slot in live if slot.channel is not None and any(slot.channel.running))
        for state, count in (("busy", busy), ("idle", len(live) - busy), ("down", len(slots) - len(live))):
            self._metrics.workers.labels(state=state).set(count)
        if len(live) >= len(slots):
            self._down_since = None
        elif self._down_since is None:
            self._down_since = time.monotonic()
        status = (len(slots), len(live), self._down_since, stopping, services or {})
        if now >= self._next_status or status != self._status_written:
            self._next_status, self._status_written = now + STATUS_EVERY, status
            SupervisorStatus(os.getpid(), time.monotonic(), *status).write(self.directory.path)
        if not stopping and self._sidecar_may_start(live, now):
            self._keep_sidecar(now)

    def _sidecar_may_start(self, live: Sequence[WorkerSlotView], now: float) -> bool:
        """The first sidecar starts once the workers have booted (or `FIRST_SIDECAR_WAIT` is
        up): its interpreter and imports would take the CPU their start-up needs, and a
        deploy waits on the workers, not on the metrics endpoint."""
        if self._sidecar_started or now >= self._first_sidecar_by:
            return True
        return bool(live) and all(slot.channel is not None and slot.channel.booted.is_set() for slot in live)

    # -- the supervisor's own metrics ------------------------------------------------------------
    @functools.cached_property
    def _metrics(self) -> _SupervisorMetrics:
        return _SupervisorMetrics.create()

    # -- the sidecar process --------------------------------------------------------------------
    def _keep_sidecar(self, now: float) -> None:
        if self._sidecar is not None:
            code = self._sidecar.poll()
            if code is None:
                return
            self._sidecar = None
            if now - self._sidecar_started >= SIDECAR_STABLE_AFTER:
                self._sidecar_failures = 0
            self._sidecar_failures += 1
            delay = min(SIDECAR_MAX_DELAY, 2.0 ** (self._sidecar_failures - 1))
            self._sidecar_due = now + delay
            log.warning("metrics sidecar exited with code %s; starting it again in %.0fs", code, delay)
        if now < self._sidecar_due:
            return
        assert self.listener is not None
        settings = json.dumps(dataclasses.asdict(self.settings))
        listener = str(self.listener.fileno())
        self._sidecar = subprocess.Popen(  # the URL may hold a password: environment, not argv
            [sys.executable, "-m", "gta_core.metrics.sidecar", str(os.getpid()), listener],
            env={**os.environ, SETTINGS_ENV: settings}, stdin=subprocess.DEVNULL, pass_fds=(self.listener.fileno(),),
        )
        self._sidecar_started = now
        log.info("metrics sidecar started (pid %d) on http://%s/metrics", self._sidecar.pid, self.address)

    def _stop_sidecar(self) -> None:
        sidecar, self._sidecar = self._sidecar, None
        if sidecar is None or sidecar.poll() is not None:
            return
        sidecar.terminate()
        try:
            sidecar.wait(5)
        except subprocess.TimeoutExpired:
            sidecar.kill()
            sidecar.wait()


def listen(bind: str) -> socket.socket:
    """A listening TCP socket on ``HOST:PORT``, or a GTAError naming the address and the way out."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server does
        listener.bind((host, int(port)))
        listener.listen(64)
    except OSError as exc:
        listener.close()
        reason = "is already in use (another gta-supervisor on this host?)" if exc.errno == errno.EADDRINUSE \
            else f"cannot be bound: {exc.strerror or exc}"
        raise GTAError(f"metrics address {bind} {reason}: give each supervisor its own port with "
                       f"--metrics-bind HOST:PORT (GTA_METRICS_BIND; port 0 picks a free one), "
                       f"or turn the sidecar off with --no-metrics") from None
    return listener


@dataclasses.dataclass(frozen=True)
class _SupervisorMetrics:
    workers: Any
    restarts: Any
    service_restarts: Any

    @classmethod
    def create(cls) -> _SupervisorMetrics:
        from prometheus_client import Counter, Gauge

        # Only the supervisor writes these. "livesum": a dead supervisor's numbers vanish
        # instead of lingering, and a sum stays right if workers ever report themselves.
        workers = Gauge("gta_workers", "Worker processes by state: busy (running a task), idle, down "
                        "(waiting to be restarted).", ["state"], multiprocess_mode="livesum", registry=None)
        restarts = Counter("gta_worker_restarts_total", "Worker processes replaced, by reason: crashed "
                           "(non-zero exit), killed (a signal), recycled (--max-tasks-per-worker).",
                           ["reason"], registry=None)
        for reason in RESTART_REASONS:  # each at 0 from the start: rate() and alerts need a series
            restarts.labels(reason=reason)
        service_restarts = Counter("gta_service_restarts_total", "Background loops of the supervisor (rescuer, "
                                   "janitor, scheduler, listener) that died and were restarted.", ["service"],
                                   registry=None)
        return cls(workers, restarts, service_restarts)
