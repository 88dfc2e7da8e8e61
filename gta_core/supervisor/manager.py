"""The supervisor: keeps N worker processes alive, and its services running.

Signal handlers only queue the signal; the main loop dispatches it (as in gunicorn's arbiter).
The main loop never waits on the database: it select()s on the signal pipe, the local wake-up
socket and the workers' sentinels. This module only manages worker processes; the database
work of the supervisor (rescuer, janitor, periodic scheduler, PostgreSQL listener) is done
by the loops of `gta_core.supervisor.services`, which the main loop keeps running through a
`ServiceRunner` (a loop that dies is logged, counted, restarted and reported to /healthz).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import queue
import secrets
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ..db import drivers
from ..db.connect import REPLY_GRACE, check_connection
from ..db.wakeup import WakeSocket
from ..errors import DatabaseUnavailable, TaskTimeout, WorkerDied
from ..limits import task_limits
from ..metrics.host import MetricsHost
from ..metrics.multiproc import MultiprocDir
from ..plugins import call_hook_safely
from ..runtime import Runtime
from ..worker.channel import EXIT_BOOT_FAILED, EXIT_CANCEL_FORCED, Doorbell, StopFlag, WorkerChannel, async_slots
from .launcher import run_worker, worker_context
from .services import Outage, Service, ServiceRunner
from .services.advertiser import Advertiser
from .services.janitor import DeadWorker, Janitor
from .services.listener import Listener
from .services.periodic import Scheduler, collect_periodics
from .services.rescuer import Rescuer
from .waking import Waker

log = logging.getLogger("gta.supervisor")

MAX_RESTART_DELAY = 30.0
STABLE_AFTER = 30.0  # a worker that lived this long resets its slot's restart backoff


@dataclasses.dataclass
class WorkerSlot:
    """One of the N places a worker process fills; survives the processes that fill it."""

    index: int
    process: Any = None
    channel: WorkerChannel | None = None
    spawned_at: float = 0.0
    failures: int = 0
    restart_at: float = 0.0
    #: task ids whose hard timeout made the supervisor kill this slot's process
    timed_out: list[int] = dataclasses.field(default_factory=list)


class Supervisor:
    """Keeps ``workers`` worker processes alive and settles their leases when they die; its
    janitor, periodic and listener threads do the cluster's housekeeping (see the module doc)."""

    def __init__(self, runtime: Runtime, until: Callable[[], bool] | None = None, periodic: bool = True,
                 metrics_directory: MultiprocDir | None = None) -> None:
        """``periodic``: enqueue the plugins' periodic tasks (`gta demo` does not: the slots of a
        shared database's periodic tasks are its supervisors' to take). ``metrics_directory``:
        the one `gta-supervisor` made before it started the fork server (`MetricsHost`)."""
        self.runtime = runtime
        self.periodic = periodic
        self.settings = runtime.settings
        self.until = until
        self.mp: Any = None  # the context workers start in, once `run` has started its fork server
        self.slots = [WorkerSlot(index) for index in range(self.settings.workers)]
        self.signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.stopping = False
        self.exit_code = 0
        self.done = threading.Event()
        self.outage = Outage(self.done)  # a statement failed while the supervisor stopped
        self.janitor = Janitor(runtime, self.outage)
        self.restarts_total = 0
        self._sigint_count = 0
        self.metrics = MetricsHost(self.settings, metrics_directory)
        self.relay = Doorbell()  # rung by a worker whose lease came back full (`waking`)
        self.waker = Waker(lambda: [slot.channel if slot.process is not None else None for slot in self.slots])

    # -- start ---------------------------------------------------------------------------
    def check(self) -> None:
        """Fail fast (GTAError) on broken plugins, an unreachable database or a missing table."""
        self.runtime.plugins  # noqa: B018 - builds and validates every plugin
        check_connection(self.runtime.db, self.settings.database_url)
        self.runtime.store.require_schema()
        # every supervisor sharing the table obeys these handlers' limits from now on
        self.runtime.store.sync_task_limits(*task_limits(self.runtime.plugins.registry.tasks.values()))
        self.periodics = collect_periodics(self.runtime) if self.periodic else []
        self.runtime.db.close()  # the main loop sends no statement; the services open their own

    def _services(self) -> ServiceRunner:
        services: list[Service] = [Advertiser(self.runtime, self.outage), Rescuer(self.runtime, self.outage),
                                   self.janitor]
        if self.periodics:
            services.append(Scheduler(self.runtime, self.periodics, self.wake_workers))
        if self.runtime.store.dialect == "postgres" and self.settings.listen_url != "off":
            # behind a transaction pooler LISTEN needs a direct connection: --listen-url
            listen_url = self.settings.listen_url or self.settings.database_url
            services.append(Listener(listen_url, self.settings.table, self.wake_workers))
        # an iteration sends a few statements, each cut at the statement timeout
        stuck_after = 3 * (self.runtime.statement_timeout + REPLY_GRACE) + self.settings.lease_timeout
        return ServiceRunner(services, self.done, stuck_after=stuck_after, on_restart=self.metrics.service_restarted)

    def run(self) -> int:
        self.metrics.open()  # before check() loads plugins: prometheus_client fixes its mode on import
        try:
            # the fork server imports the workers' code (and prometheus_client, in the mode the
            # directory sets) while this process checks the rest; gta-supervisor started it
            # already, so this finds it running (in-process, as in tests, this starts it)
            self.mp = worker_context(self.runtime.store.dialect, self.metrics.directory)
            self.check()
            self.metrics.bind()
        except BaseException:
            self.metrics.close()
            raise
        self.metrics.publish_catalog(self.runtime, self.periodics)
        call_hook_safely(self.runtime.plugins, "gta_supervisor_started",
                         tasks=list(self.runtime.plugins.registry.tasks.values()), queues=list(self.settings.queues))
        os.environ[drivers.ENV] = self.runtime.store.dialect  # the sidecar imports one driver (workers: launcher)
        self._signal_r, self._signal_w = socket.socketpair()
        self._signal_r.setblocking(False)
        self._signal_w.setblocking(False)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._queue_signal)
        wake = self._open_wake_socket()
        self._spawn_due()  # the workers boot while the services start
        self.services = self._services()
        self.metrics.services(self.services.names)
        self.services.start()
        log.info("supervisor %d: %d worker(s) x %d thread(s) on %s, queues %s", os.getpid(),
                 self.settings.workers, self.settings.threads, self.runtime.store.dialect,
                 ",".join(self.settings.queues))
        try:
            self._main_loop(wake)
        finally:
            self._kill_all()
            self.done.set()
            self.janitor.interrupt()
            self.services.join(self.settings.lease_timeout)  # one wait for all, each may hang on a query
            self.janitor.settle_all(self.done)
            self.metrics.close()
            os.environ.pop(drivers.ENV, None)
            if wake is not None:
                wake.close()
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)
        log.info("supervisor %d stopped", os.getpid())
        return self.exit_code

    def _open_wake_socket(self) -> Any:
        if self.runtime.store.dialect == "postgres":
            return None
        return WakeSocket(self.runtime.wake_key(self.runtime.db))

    def _queue_signal(self, signum: int, _frame: Any) -> None:
        self.signals.put(signum)
        try:
            self._signal_w.send(b"s")
        except OSError:
            pass

    # -- main loop -------------------------------------------------------------------------
    def _main_loop(self, wake: Any) -> None:
        stop_deadline = None
        next_until_check = 0.0
        while True:
            self._handle_signals()
            if self.stopping and stop_deadline is None:
                stop_deadline = time.monotonic() + self.settings.shutdown_timeout + 5.0
                self.outage.stopping.set()
                for slot in self.slots:
                    self._stop_slot(slot)
            self._enforce_timeouts()
            self._reap()
            self.services.watch()
            self.metrics.tick(self.slots, self.stopping, self.services.health())
            if self.stopping:
                if not any(slot.process is not None for slot in self.slots):
                    return
                if stop_deadline is not None and time.monotonic() > stop_deadline:
                    log.warning("workers did not stop within the shutdown timeout; killing them")
                    return
            else:
                self._spawn_due()
                if self.until is not None and time.monotonic() >= next_until_check:
                    next_until_check = time.monotonic() + 0.2
                    if self.until():
                        self.stopping = True
                        continue
            waitables: list[Any] = [self._signal_r, self.relay]
            if wake is not None:
                waitables.append(wake)
            waitables += [slot.process.sentinel for slot in self.slots if slot.process is not None]
            try:
                ready, _, _ = select.select(waitables, [], [], min(0.25, self.waker.check()))
            except InterruptedError:
                continue
            if self._signal_r in ready:
                try:
                    while self._signal_r.recv(64):
                        pass
                except BlockingIOError:
                    pass
            if wake is not None and wake in ready and wake.drain():
                self.wake_workers()
            if self.relay in ready:  # a worker's lease came back full: a burst
                self.relay.clear()
                self.waker.ring_every_idle()

    def _handle_signals(self) -> None:
        while True:
            try:
                signum = self.signals.get_nowait()
            except queue.Empty:
                return
            if signum == signal.SIGINT:
                self._sigint_count += 1
                if self._sigint_count >= 2:
                    log.warning("second SIGINT: releasing leases and exiting now")
                    self._kill_all()
                    self.stopping = True
                    continue
            if not self.stopping:
                log.info("%s: stopping (waiting up to %.0fs for running tasks)",
                         signal.Signals(signum).name, self.settings.shutdown_timeout)
            self.stopping = True

    def wake_workers(self) -> None:
        """Work may be due: ring an idle worker (never blocks, whatever state the workers are in)."""
        self.waker.ring_idle()

    # -- worker processes ------------------------------------------------------------------
    def _spawn_due(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.process is None and now >= slot.restart_at:
                self._spawn(slot)

    def _spawn(self, slot: WorkerSlot) -> None:
        # a slot per handler thread, then one per async task the worker may run at once
        threads = self.settings.threads + async_slots(self.settings, self.runtime.plugins.registry)
        channel = WorkerChannel(
            owner=f"{socket.gethostname()}:{os.getpid()}.{slot.index}:{secrets.token_hex(8)}",
            wake=Doorbell(self.mp), relay=self.relay, stop=StopFlag(self.mp),
            running=self.mp.Array("q", threads, lock=False), started=self.mp.Array("d", threads, lock=False),
            deadlines=self.mp.Array("d", threads, lock=False), booted=StopFlag(self.mp),
            # a worker holds at most slots + prefetch leases, so no more unwritten successes
            unwritten=self.mp.Array("q", threads + self.settings.prefetch, lock=False),
        )
        # the environment as it is now: the fork server's dates from its start (`launcher`)
        process = self.mp.Process(target=run_worker, args=(self.settings, channel, dict(os.environ)),
                                  name=f"gta-worker-{slot.index}", daemon=False)
        process.start()
        slot.process, slot.channel, slot.spawned_at = process, channel, time.monotonic()
        log.info("worker %d started (pid %d, lease owner %s)", slot.index, process.pid, channel.owner)

    def _stop_slot(self, slot: WorkerSlot) -> None:
        if slot.channel is not None:
            slot.channel.request_stop()

    def _reap(self) -> None:
        for slot in self.slots:
            process = slot.process
            if process is None or process.is_alive():
                continue
            process.join()
            self.metrics.worker_exited(process.pid)
            assert slot.channel is not None
            code = process.exitcode
            lived = time.monotonic() - slot.spawned_at
            reason = f"killed by {signal.Signals(-code).name}" if code and code < 0 else f"exit code {code}"
            running = [task_id for task_id in slot.channel.running if task_id]
            succeeded = [task_id for task_id in slot.channel.unwritten if task_id]
            owner, timed_out = slot.channel.owner, slot.timed_out
            slot.process, slot.timed_out = None, []
            counted: dict[int, BaseException] = {}
            if timed_out:  # only the overdue tasks pay an attempt; the others were innocent
                counted = {task_id: TaskTimeout(f"task ran past its timeout; worker {owner} was killed")
                           for task_id in timed_out}
                log.warning("worker %d (pid %d) killed for overrunning tasks %s", slot.index, process.pid, timed_out)
            elif code in (0, EXIT_CANCEL_FORCED):
                log.info("worker %d (pid %d) exited (%s)", slot.index, process.pid, reason)
            else:
                counted = {task_id: WorkerDied(f"worker {owner} died ({reason}) while running this task")
                           for task_id in running}
                log.warning("worker %d (pid %d) died: %s; running tasks %s", slot.index, process.pid,
                            reason, running or "none")
            self.janitor.jobs.put(DeadWorker(owner, counted, succeeded))
            if code == EXIT_BOOT_FAILED and not slot.channel.booted.is_set():
                log.error("worker %d failed to boot; stopping the supervisor", slot.index)
                self.exit_code = 1
                self.stopping = True
                continue
            if self.stopping:
                continue
            self.restarts_total += 1
            self.metrics.worker_restarted(code)
            if code in (0, EXIT_CANCEL_FORCED) or timed_out:
                slot.failures, slot.restart_at = 0, 0.0  # recycled, or killed on purpose: not a crash
                continue
            slot.failures = 0 if lived >= STABLE_AFTER else slot.failures + 1
            delay = min(MAX_RESTART_DELAY, 0.1 * 2 ** slot.failures) if slot.failures else 0.0
            slot.restart_at = time.monotonic() + delay
            if delay:
                log.info("restarting worker %d in %.1fs", slot.index, delay)

    def _enforce_timeouts(self) -> None:
        """Hard-kill a worker whose task overran its ``@task(timeout=...)``.

        A thread cannot be stopped from outside, so the whole process goes; `_reap` then gives
        the overdue task the normal retry path (a timeout error, attempt counted) and releases
        the worker's other tasks without counting an attempt.
        """
        now = time.monotonic()
        for slot in self.slots:
            if slot.process is None or slot.channel is None or slot.timed_out:
                continue
            overdue = [task_id for task_id, deadline in zip(slot.channel.running, slot.channel.deadlines, strict=True)
                       if task_id and 0 < deadline < now]
            if overdue:
                slot.timed_out = overdue
                slot.process.kill()

    def _kill_all(self) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.is_alive():
                slot.process.kill()
        for slot in self.slots:
            if slot.process is not None:
                slot.process.join(5)
                if slot.channel is not None:
                    self.janitor.jobs.put(DeadWorker(slot.channel.owner, {}))
                slot.process = None


def run_supervisor(runtime: Runtime, until: Callable[[], bool] | None = None, periodic: bool = True,
                   metrics_directory: MultiprocDir | None = None) -> int:
    """Run a supervisor in this process until SIGTERM/SIGINT (or ``until()``); its exit code."""
    return Supervisor(runtime, until, periodic, metrics_directory).run()


__all__ = ["Supervisor", "run_supervisor", "DatabaseUnavailable"]
