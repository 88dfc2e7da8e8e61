"""The supervisor: keeps N worker processes alive and the cluster's leases honest.

Signal handlers only queue the signal; the main loop dispatches it (as in gunicorn's arbiter).
The main loop never waits on the database: it select()s on the signal pipe, the wake-up
sources and the workers' sentinels. Database work happens on two threads of its own:
- the janitor releases a dead worker's leases at once and rescues expired leases
  cluster-wide every rescue_interval (conditional and batched, see `TaskStore.rescue_expired`);
- on PostgreSQL, the listener LISTENs for submit's NOTIFY and wakes the workers.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools
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

import multiprocess
import peewee

from . import drivers
from .database import check_connection, drop_connection, in_transaction, open_database
from .errors import DatabaseUnavailable, GTAError, PluginError, TaskTimeout, WorkerDied
from .metrics.host import MetricsHost
from .plugins import call_hook_safely, first_hook_result, periodic_definitions, report_task_events
from .runtime import Runtime
from .schedules import Periodic
from .submit import TaskRequest, prepare
from .worker import EXIT_BOOT_FAILED, EXIT_CANCEL_FORCED, Doorbell, StopFlag, WorkerChannel, describe_error, worker_main

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


@dataclasses.dataclass
class DeadWorker:
    """A reaped worker whose leases must be given back.

    Tasks in ``counted`` were executing and take the normal retry path with that error
    (the attempt counts); every other lease of the worker is released without counting.
    """

    owner: str
    counted: dict[int, BaseException]
    #: tasks whose handler had succeeded and whose success write was still to come
    succeeded: list[int] = dataclasses.field(default_factory=list)


class Supervisor:
    def __init__(self, runtime: Runtime, until: Callable[[], bool] | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.until = until
        self.mp = multiprocess.get_context("spawn")
        self.slots = [WorkerSlot(index) for index in range(self.settings.workers)]
        self.signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.dead: queue.SimpleQueue[DeadWorker | None] = queue.SimpleQueue()
        self.stopping = False
        self.exit_code = 0
        self.done = threading.Event()
        self.rescued_total = 0
        self.restarts_total = 0
        self._sigint_count = 0
        self.metrics = MetricsHost(self.settings)

    # -- start ---------------------------------------------------------------------------
    def check(self) -> None:
        """Fail fast (GTAError) on broken plugins, an unreachable database or a missing table."""
        self.runtime.plugins  # noqa: B018 - builds and validates every plugin
        check_connection(self.runtime.db, self.settings.database_url)
        self.runtime.store.require_schema()
        self.periodics = collect_periodics(self.runtime)

    def run(self) -> int:
        self.metrics.open()  # before check() loads plugins: prometheus_client fixes its mode on import
        try:
            self.check()
            self.metrics.bind()
        except BaseException:
            self.metrics.close()
            raise
        call_hook_safely(self.runtime.plugins, "gta_supervisor_started",
                         tasks=list(self.runtime.plugins.registry.tasks.values()), queues=list(self.settings.queues))
        os.environ[drivers.ENV] = self.runtime.store.dialect  # workers and sidecar import one driver
        self._signal_r, self._signal_w = socket.socketpair()
        self._signal_r.setblocking(False)
        self._signal_w.setblocking(False)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._queue_signal)
        wake = self._open_wake_socket()
        threads = [threading.Thread(target=self._janitor_loop, name="gta-janitor", daemon=True)]
        if self.periodics:
            threads.append(threading.Thread(target=self._periodic_loop, name="gta-periodic", daemon=True))
        if self.runtime.store.dialect == "postgres" and self.settings.listen_url != "off":
            threads.append(threading.Thread(target=self._listen_loop, name="gta-listener", daemon=True))
        for thread in threads:
            thread.start()
        log.info("supervisor %d: %d worker(s) x %d thread(s) on %s, queues %s", os.getpid(),
                 self.settings.workers, self.settings.threads, self.runtime.store.dialect,
                 ",".join(self.settings.queues))
        try:
            self._main_loop(wake)
        finally:
            self._kill_all()
            self.done.set()
            self.dead.put(None)
            joined_by = time.monotonic() + self.settings.lease_timeout  # one wait for all, each may hang on a query
            for thread in threads:
                thread.join(timeout=max(0.0, joined_by - time.monotonic()))
            self._release_everything()
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
        from .wake import WakeSocket
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
                for slot in self.slots:
                    self._stop_slot(slot)
            self._enforce_timeouts()
            self._reap()
            self.metrics.tick(self.slots, self.stopping)
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
            waitables: list[Any] = [self._signal_r]
            if wake is not None:
                waitables.append(wake)
            waitables += [slot.process.sentinel for slot in self.slots if slot.process is not None]
            try:
                ready, _, _ = select.select(waitables, [], [], 0.25)
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
        """Ring every live worker's doorbell (never blocks, whatever state the workers are in)."""
        for slot in self.slots:
            if slot.channel is not None and slot.process is not None:
                slot.channel.wake.ring()

    # -- worker processes ------------------------------------------------------------------
    def _spawn_due(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.process is None and now >= slot.restart_at:
                self._spawn(slot)

    def _spawn(self, slot: WorkerSlot) -> None:
        threads = self.settings.threads
        channel = WorkerChannel(
            owner=f"{socket.gethostname()}:{os.getpid()}.{slot.index}:{secrets.token_hex(8)}",
            wake=Doorbell(self.mp), stop=StopFlag(self.mp),
            running=self.mp.Array("q", threads, lock=False), started=self.mp.Array("d", threads, lock=False),
            deadlines=self.mp.Array("d", threads, lock=False), booted=StopFlag(self.mp),
            # a worker holds at most threads + prefetch leases, so no more unwritten successes
            unwritten=self.mp.Array("q", threads + self.settings.prefetch, lock=False),
        )
        process = self.mp.Process(target=worker_main, args=(self.settings, channel, os.getpid()),
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
            self.dead.put(DeadWorker(owner, counted, succeeded))
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
        now = time.time()
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
                    self.dead.put(DeadWorker(slot.channel.owner, {}))
                slot.process = None

    # -- janitor thread --------------------------------------------------------------------
    def _janitor_loop(self) -> None:
        store = self.runtime.store
        next_rescue = time.monotonic()
        while True:
            timeout = max(0.0, next_rescue - time.monotonic())
            try:
                job = self.dead.get(timeout=timeout)
            except queue.Empty:
                job = None
                if self.done.is_set():
                    return
                next_rescue = time.monotonic() + self.settings.rescue_interval
                self._rescue(store)
                continue
            if job is None:
                return
            self._release_dead(job)

    def _rescue(self, store: Any) -> None:
        try:
            while True:
                rescued = store.rescue_expired(limit=500)
                for task in rescued:
                    log.warning("task %d (%s) lease expired; now %s", task.id, task.key, task.status)
                report_task_events(self.runtime.plugins, "rescued", rescued)
                self.rescued_total += len(rescued)
                if len(rescued) < 500:
                    return
        except (GTAError, peewee.DatabaseError, peewee.InterfaceError) as exc:
            log.warning("lease rescue failed: %s", exc)

    def _record_successes(self, job: DeadWorker) -> None:
        """Write the successes a dead worker had not written yet (fenced: a lease that expired and
        was taken over meanwhile is left alone); they ran to the end, so they must not run again."""
        store = self.runtime.store
        tasks = {task.id: task for task in store.owned(job.owner) if task.id in job.succeeded}
        accepted = store.complete_many(job.owner, list(tasks), [task.attempts for task in tasks.values()])
        for task_id in sorted(accepted):
            log.info("task %d: recorded the success its worker %s had not written before dying", task_id, job.owner)
        report_task_events(self.runtime.plugins, "succeeded", [tasks[task_id] for task_id in sorted(accepted)])

    def _release_dead(self, job: DeadWorker) -> bool:
        """Give a dead worker's leases back at once; tasks it was running count an attempt.

        False when the database could not be reached: the leases then expire and are rescued.
        While exiting there is one try only, so an unreachable database cannot hold the exit up.
        """
        store = self.runtime.store
        for attempt in range(1, 1000):
            try:
                if job.succeeded:
                    self._record_successes(job)
                if job.counted:
                    for task in store.owned(job.owner):
                        if task.id not in job.counted:
                            continue
                        error = job.counted[task.id]
                        delay = first_hook_result(self.runtime.plugins, "gta_retry_delay", task=task, error=error)
                        if delay is None:
                            landed = store.fail(job.owner, task.id, describe_error(error), attempt=task.attempts)
                            event = "failed"
                        else:
                            landed = store.retry(job.owner, task.id, float(delay), describe_error(error),
                                                 attempt=task.attempts)
                            event = "retried"
                        if landed:  # fenced: rescue may have taken the lease meanwhile; report only our outcome
                            report_task_events(self.runtime.plugins, event, [task], [error])
                released = store.release(job.owner)
                if released:
                    log.info("released %d task(s) leased by %s", released, job.owner)
                return True
            except (GTAError, peewee.DatabaseError, peewee.InterfaceError) as exc:
                if self.done.is_set():
                    log.error("could not release leases of %s (%s); they will expire and be rescued",
                              job.owner, exc)
                    return False
                time.sleep(min(5.0, 0.2 * 2 ** attempt))
        return False

    def _release_everything(self) -> None:
        """At exit: drain the janitor's queue in this thread (its thread has stopped). After one
        failure the database is taken as unreachable: every statement would wait out its
        timeout, so the other leases are left to expire and be rescued."""
        reachable = True
        while True:
            try:
                job = self.dead.get_nowait()
            except queue.Empty:
                return
            if job is None:
                continue
            if reachable:
                reachable = self._release_dead(job)
            else:
                log.error("could not release leases of %s (the database is unreachable); they will expire "
                          "and be rescued", job.owner)

    # -- periodic thread -------------------------------------------------------------------
    def _periodic_loop(self) -> None:
        """Enqueue each periodic task's latest slot once; the dedupe key makes it once cluster-wide.

        A slot older than storage_timeout is not enqueued: its row (the dedupe memory) may
        already be cleaned up, and running it again would be a duplicate, not a catch-up.
        """
        last: dict[str, str] = {}
        # a list, not min(1.0, *intervals): with cron schedules only that is min(1.0), a TypeError
        # that killed this thread, so cron-only periodic tasks were never enqueued
        tick = max(0.2, min([1.0, *(p.every / 4 for p in self.periodics if p.every)]))
        while not self.done.wait(0 if not last else tick):
            now = dt.datetime.now(dt.timezone.utc)
            for job in self.periodics:
                slot = job.latest_slot(now)
                if slot is None or last.get(job.name) == slot[0]:
                    continue
                label, moment = slot
                if (now - moment).total_seconds() > self.settings.storage_timeout:
                    last[job.name] = label
                    continue
                request = TaskRequest(job.key, job.args, run_at=moment, queue=job.queue, priority=job.priority,
                                      dedupe_key=job.dedupe_key(label))
                try:
                    rows = [prepare(self.runtime, request)]
                    in_transaction(self.runtime.db, functools.partial(self.runtime.store.insert, rows))
                except (GTAError, peewee.DatabaseError, peewee.InterfaceError) as exc:
                    log.warning("could not enqueue periodic task %s slot %s: %s", job.name, label, exc)
                    continue
                last[job.name] = label
                self.wake_workers()

    # -- PostgreSQL listener thread ----------------------------------------------------------
    def _listen_loop(self) -> None:
        channel = f"gta_{self.settings.table}"
        failures = 0
        while not self.done.is_set():
            db = open_database(self.settings.listen_url or self.settings.database_url, statement_timeout=0)
            try:
                conn = db.connection()
                with conn.cursor() as cursor:
                    cursor.execute(f'LISTEN "{channel}"')
                failures = 0
                self.wake_workers()  # anything committed while we were not listening
                while not self.done.is_set():
                    if select.select([conn], [], [], 1.0)[0]:
                        conn.poll()
                        if conn.notifies:
                            conn.notifies.clear()
                            self.wake_workers()
            except Exception as exc:
                failures += 1
                log.warning("LISTEN connection failed (%s); reconnecting", exc)
                self.done.wait(min(10.0, 0.2 * 2 ** failures))
            finally:
                drop_connection(db)


def collect_periodics(runtime: Runtime) -> list[Periodic]:
    """Every plugin's periodic tasks, checked now: a bad one stops the start (PluginError)."""
    jobs: list[Periodic] = []
    for job in periodic_definitions(runtime.plugins):
        if any(other.name == job.name for other in jobs):
            raise PluginError(f"two periodic tasks named {job.name!r}")
        try:
            prepare(runtime, TaskRequest(job.key, job.args, queue=job.queue, priority=job.priority))
        except GTAError as exc:
            raise PluginError(f"periodic task {job.name!r}: {exc}") from exc
        # A slot's row is the dedupe memory that keeps every other supervisor (and this one
        # after a restart) from enqueuing the slot again; deleting it on success made each
        # supervisor run the slot once more.
        if runtime.plugins.registry.get(job.key).clean_succeeded:
            raise PluginError(f"periodic task {job.name!r}: task {job.key!r} is clean_succeeded, but a "
                              "periodic slot's row must be kept so that the slot runs once; drop "
                              "clean_succeeded (cleanup removes old rows)")
        jobs.append(job)
    return jobs


def run_supervisor(runtime: Runtime, until: Callable[[], bool] | None = None) -> int:
    """Run a supervisor in this process until SIGTERM/SIGINT (or ``until()``); its exit code."""
    return Supervisor(runtime, until).run()


__all__ = ["Supervisor", "run_supervisor", "DatabaseUnavailable"]
