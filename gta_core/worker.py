"""A worker process: lease due tasks, run their handlers on threads, record each outcome.

Three kinds of thread share one process:
- the main thread leases tasks whenever a handler thread is free (adaptive polling: again at
  once after a lease that found work, then from instant_scan_interval doubling up to
  scan_interval; a wake-up from the supervisor cuts any wait short);
- ``threads`` handler threads run tasks and record outcomes with fenced writes;
- a heartbeat thread renews every in-flight lease in one statement each third of the lease
  timeout, and stops the worker when its supervisor is gone. Python switches threads every
  few milliseconds, so a busy pure-Python handler cannot starve it.

Each handler thread publishes the id of the task it is running in shared memory, so the
supervisor knows, if this process dies, which tasks were really executing (their attempt
counts) and which were only leased (released without counting).
"""
from __future__ import annotations

import ctypes
import dataclasses
import datetime as dt
import functools
import logging
import os
import queue
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import peewee

from . import runtime as runtime_module
from .config import Settings
from .errors import DatabaseUnavailable, Fail, GTAError
from .outcomes import Action, Outcome, decide, one_line
from .plugins import call_hook_safely, report_task_events
from .runtime import Runtime
from .submit import TaskRequest, capture_context, prepare
from .tasks import TaskContext, TaskDefinition, TaskRecord

log = logging.getLogger("gta.worker")
T = TypeVar("T")

EXIT_BOOT_FAILED = 3
EXIT_RECYCLED = 0
EXIT_CANCEL_FORCED = 4  # the worker killed itself to stop a handler cancelled with force=True
EXIT_THREAD_DIED = 5  # one of the worker's threads died (see `Worker._vital`)
CANCEL_CHECK_INTERVAL = 1.0
PREFETCH_WINDOW = 0.05  # seconds of work at the current pace a worker may hold beyond its threads
PACE_WEIGHT = 0.2  # weight of the newest task in the moving average of task run time
#: a task that has run this long (seconds) is not about to free its thread: while every thread
#: runs one, the worker prefetches nothing (`Worker._prefetch_allowance`)
LONG_TASK = 0.25
#: while every thread has run its task this long, prefetched tasks still waiting are handed
#: back for idle workers (`Worker._unpark`)
UNPARK_AFTER = 1.0
_PR_SET_PDEATHSIG = 1


class Doorbell:
    """A cross-process wake-up that neither a dead waiter nor a signal handler can deadlock.

    multiprocessing's Event is a Condition whose ``set()`` blocks until every sleeper has
    acknowledged the wake-up. A worker killed while it waits (SIGKILL, a handler's
    ``os._exit``, the OOM killer) stays counted as a sleeper forever, so the supervisor's next
    ``set()`` hangs for good; and a SIGTERM handler calling ``set()`` while its own main thread
    sleeps in ``wait()`` waits for itself. A bounded semaphore keeps no such bookkeeping:
    `ring` is one ``sem_post`` that never blocks and is safe inside a signal handler.
    """

    def __init__(self, ctx: Any) -> None:
        self._sem = ctx.BoundedSemaphore(1)

    def ring(self) -> None:
        try:
            self._sem.release()
        except ValueError:  # already rung and not yet heard
            pass

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a ring and consume it; True if it rang."""
        return bool(self._sem.acquire(True, max(0.0, timeout)))

    def clear(self) -> None:
        self._sem.acquire(False)


class StopFlag:
    """A one-way flag in shared memory: setting it is a plain store, safe in a signal handler."""

    def __init__(self, ctx: Any) -> None:
        self._value = ctx.RawValue("b", 0)

    def set(self) -> None:
        self._value.value = 1

    def is_set(self) -> bool:
        return bool(self._value.value)


@dataclasses.dataclass
class WorkerChannel:
    """What a supervisor and one worker process share (all picklable multiprocess objects)."""

    owner: str
    wake: Doorbell  # work may be due, or the worker should look at `stop`
    stop: StopFlag  # stop leasing, finish in-flight work, release the rest, exit
    running: Any  # Array('q', threads): task id each handler thread is running, 0 when idle
    started: Any  # Array('d', threads): time.time() each of those tasks started
    deadlines: Any  # Array('d', threads): time.time() by which that task must end (0: no timeout)
    booted: StopFlag  # set once the worker loaded its plugins: a later exit is never a boot failure
    # Array('q', threads + prefetch): tasks whose handler succeeded and whose batched success
    # write has not landed yet, 0 in free places; if the process dies first, the supervisor
    # records those successes (they ran to the end: neither a re-run nor a lost attempt)
    unwritten: Any

    def request_stop(self) -> None:
        """Ask the worker to stop (from the supervisor, or a signal handler in the worker)."""
        self.stop.set()
        self.wake.ring()


def worker_main(settings: Settings, channel: WorkerChannel, parent_pid: int) -> None:
    """Entry point of a worker process (spawned by the supervisor)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the supervisor decides
    signal.signal(signal.SIGTERM, lambda *_: channel.request_stop())
    _die_with_parent()
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s [worker {os.getpid()}] %(name)s: %(message)s")
    try:
        runtime = runtime_module.configure(settings)
        runtime.plugins  # noqa: B018 - load plugins now, so a broken one fails the boot
    except Exception:
        log.exception("worker failed to boot")
        os._exit(EXIT_BOOT_FAILED)
    channel.booted.set()
    code = Worker(runtime, channel, parent_pid).run()
    logging.shutdown()
    os._exit(code)


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM when the supervisor dies (the heartbeat thread also checks)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class Worker:
    def __init__(self, runtime: Runtime, channel: WorkerChannel, parent_pid: int) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.store = runtime.store
        self.plugins = runtime.plugins
        self.channel = channel
        self.owner = channel.owner
        self.parent_pid = parent_pid
        self.lock = threading.Lock()
        self.inflight: dict[int, TaskRecord] = {}
        # until when (monotonic) each held lease surely lasts: the lease's or last renewal's
        # send time plus lease_timeout (the database set it later, so it lasts at least that)
        self.lease_held_until: dict[int, float] = {}
        self.recording: set[int] = set()  # in-flight tasks whose outcome write has begun
        self.contexts: dict[int, TaskContext] = {}  # running tasks, for cancellation
        # plain successes waiting for the completer thread; they keep their leases (and
        # heartbeats) until their one batched, fenced write lands
        self.completed: list[tuple[TaskRecord, float, int]] = []  # (task, duration, place in unwritten)
        self.completed_ready = threading.Condition(self.lock)
        self.unwritten_free = list(range(len(channel.unwritten)))  # free places in channel.unwritten
        self.flush_lock = threading.Lock()
        self.cancelled: set[int] = set()
        self.todo: queue.SimpleQueue[TaskRecord | None] = queue.SimpleQueue()
        self.finished = 0
        #: moving average of a task's time on a handler thread (seconds); None until one ends
        self.pace: float | None = None
        self.leases_lost = 0
        # tasks that ran but whose outcome write never landed (an outage longer than a lease):
        # rescue re-runs them with the attempt counted, so they are no orphans to release
        self.unrecorded: set[int] = set()
        self.stopping = threading.Event()
        self.nudged = False  # `_nudge` rang the lease loop since it last looked

    # -- main thread: leasing --------------------------------------------------------------
    def run(self) -> int:
        threads = [threading.Thread(target=self._vital, args=(self._handler_loop, slot), name=f"gta-handler-{slot}",
                                    daemon=True) for slot in range(self.settings.threads)]
        threads.append(threading.Thread(target=self._vital, args=(self._heartbeat_loop,), name="gta-heartbeat",
                                        daemon=True))
        threads.append(threading.Thread(target=self._vital, args=(self._completer_loop,), name="gta-completer",
                                        daemon=True))
        for thread in threads:
            thread.start()
        log.info("worker %s serving queues %s", self.owner, ",".join(self.settings.queues))
        self._lease_loop()
        return self._drain_and_release()

    def _vital(self, loop: Callable[..., None], *args: Any) -> None:
        """Run one of the worker's threads; if it dies, the process goes too.

        A worker missing a thread is worse than a dead one: without its completer, successes
        are never written while the heartbeat keeps their leases alive forever; without its
        heartbeat, live tasks are rescued and run twice. Exiting hands everything to the
        supervisor, which settles the leases (`Supervisor._reap`) and starts a new worker.
        """
        try:
            loop(*args)
        except BaseException:
            log.critical("worker thread %s died; exiting so the supervisor replaces this worker",
                         threading.current_thread().name, exc_info=True)
            logging.shutdown()
            os._exit(EXIT_THREAD_DIED)

    def _lease_loop(self) -> None:
        settings, channel = self.settings, self.channel
        idle_delay = settings.instant_scan_interval
        failures = 0
        orphans_possible = False
        while not self._should_stop():
            channel.wake.clear()
            self.nudged = False
            held = self._held()
            wait = settings.scan_interval
            ahead = self._prefetch_allowance()
            if held < self._low_water(ahead):
                want = min(settings.batch, settings.threads + ahead - held)
                sent = time.monotonic()
                try:
                    tasks = self.store.lease(self.owner, settings.queues, want, settings.lease_timeout)
                    failures = 0
                except (DatabaseUnavailable, peewee.DatabaseError, peewee.InterfaceError) as exc:
                    failures += 1
                    backoff = min(settings.scan_interval, 0.2 * 2 ** min(failures, 6)) * random.uniform(0.5, 1)
                    log.warning("lease failed (%s); retrying in %.1fs", exc, backoff)
                    orphans_possible = True
                    resume = time.monotonic() + backoff
                    while not channel.stop.is_set() and time.monotonic() < resume:
                        channel.wake.wait(resume - time.monotonic())
                    continue
                with self.lock:
                    for task in tasks:
                        self.inflight[task.id] = task
                        self.lease_held_until[task.id] = sent + settings.lease_timeout
                if orphans_possible:  # after the new tasks are known, or they would count as orphans
                    orphans_possible = not self._release_orphans()
                for task in tasks:
                    self.todo.put(task)
                if tasks:
                    idle_delay = settings.instant_scan_interval
                    if len(tasks) == want and self._held() < self._low_water(ahead):
                        continue  # more may be due: lease again at once
                    wait = settings.scan_interval if len(tasks) == want else idle_delay
                else:
                    wait = idle_delay
                    idle_delay = min(idle_delay * 2, settings.scan_interval)
            if not channel.stop.is_set():  # a stop may have rung just before wake.clear() took the ring
                channel.wake.wait(wait)

    def _held(self) -> int:
        """Tasks leased and not finished (one whose outcome is being written holds no thread)."""
        return len(self.inflight) - len(self.recording)

    def _low_water(self, ahead: int) -> int:
        """Lease again below this many held tasks: a thread is (about to be) idle, or the
        prefetched ``ahead`` is half used up."""
        return self.settings.threads + ahead // 2

    def _prefetch_allowance(self) -> int:
        """How many tasks to hold leased beyond the threads: about PREFETCH_WINDOW of work at
        the pace tasks have been running, at most ``prefetch``, none before the first task ends.

        Short tasks then arrive in big batches (one lease statement per batch, not per task),
        while a slow task is never parked behind another in a busy worker when an idle worker
        could start it now.
        """
        if self.pace is None or not self.settings.prefetch or self._threads_busy_for(LONG_TASK):
            return 0
        return min(self.settings.prefetch, int(PREFETCH_WINDOW * self.settings.threads / max(self.pace, 1e-6)))

    def _threads_busy_for(self, seconds: float) -> bool:
        """Whether every handler thread has been running its current task for ``seconds``."""
        since = time.time() - seconds
        running, started = self.channel.running, self.channel.started
        return all(running[slot] and started[slot] <= since for slot in range(self.settings.threads))

    def _unpark(self) -> None:
        """Hand back prefetched tasks stuck behind long-running ones, unrun and uncounted.

        Prefetch sizes itself by the pace of the tasks so far; a task far slower than that pace
        would otherwise hold the ones queued behind it for its whole run, while other workers
        sit idle (and the monitor reports them as running for long). Once every thread has run
        its task for `UNPARK_AFTER`, what still waits goes back to pending, each release fenced
        on its lease; the lease loop takes no more meanwhile (`_prefetch_allowance`).
        """
        if self.todo.empty() or not self._threads_busy_for(UNPARK_AFTER):
            return
        waiting: list[TaskRecord] = []
        stops = 0
        while True:
            try:
                item = self.todo.get_nowait()
            except queue.Empty:
                break
            if item is None:
                stops += 1
            else:
                waiting.append(item)
        for _ in range(stops):  # a shutdown's wake-ups for the handler threads stay queued
            self.todo.put(None)
        with self.lock:
            mine = [task for task in waiting if self.inflight.get(task.id) is task]
        if mine:
            given_back = self._give_back(mine)
            log.info("gave back %d of %d prefetched task(s) waiting behind long-running ones",
                     given_back, len(mine))

    def _give_back(self, tasks: list[TaskRecord]) -> int:
        """Return leased tasks that never started to pending, uncounted, each release fenced on
        its lease (one lost meanwhile is left to its new holder); how many were released. If the
        database cannot be reached, lease rescue returns them later, with the attempt counted."""
        given_back = 0
        for task in tasks:
            try:
                given_back += self.store.release_lease(self.owner, task.id, task.attempts)
            except (GTAError, peewee.DatabaseError, peewee.InterfaceError) as exc:
                log.warning("could not give task %d back (%s); lease rescue will", task.id, exc)
        self._forget(tasks, ran=False)
        return given_back

    def _release_orphans(self) -> bool:
        """After a failed lease, give back rows it may have leased before the connection broke.

        Heartbeats renew only tasks this worker knows, so such orphans would otherwise wait for
        rescue and lose an attempt. Returns False if the database is still unreachable.
        """
        try:
            with self.lock:
                known = set(self.inflight) | self.unrecorded
            orphans = [task.id for task in self.store.owned(self.owner) if task.id not in known]
            if orphans:
                log.warning("releasing %d task(s) leased by a statement whose reply was lost", len(orphans))
                self.store.release(self.owner, orphans)
            return True
        except (GTAError, peewee.DatabaseError, peewee.InterfaceError):
            return False

    def _should_stop(self) -> bool:
        if self.channel.stop.is_set():
            return True
        limit = self.settings.max_tasks_per_worker
        return bool(limit and self.finished >= limit)

    def _drain_and_release(self) -> int:
        """Stop: wait up to shutdown_timeout for running handlers, then release the rest."""
        self.stopping.set()
        for _ in range(self.settings.threads):
            self.todo.put(None)
        deadline = time.monotonic() + self.settings.shutdown_timeout
        while time.monotonic() < deadline:
            with self.lock:
                running = [task_id for task_id in self.channel.running if task_id]
            if not running:
                break
            time.sleep(0.05)
        self._flush_completed()  # successes must land before the rest is released
        with self.lock:
            leftover = list(self.inflight)
            self.inflight.clear()
        if leftover:
            try:
                released = self.store.release(self.owner, leftover)
                log.info("released %d unfinished task(s) back to pending: %s", released, leftover)
            except Exception as exc:  # the supervisor releases them after we exit
                log.warning("could not release %s (%s); the supervisor will", leftover, exc)
        return EXIT_RECYCLED

    # -- handler threads -------------------------------------------------------------------
    def _handler_loop(self, slot: int) -> None:
        while True:
            task = self.todo.get()
            if task is None or self.stopping.is_set():
                return
            if self._lease_lapsed(task):
                continue
            started = time.time()
            definition = self.plugins.registry.tasks.get(task.key)
            timeout = definition.timeout if definition is not None else None
            # deadline before id, and id cleared before deadline: the supervisor never pairs
            # a task with another task's deadline
            self.channel.deadlines[slot] = started + timeout if timeout else 0.0
            self.channel.started[slot] = started
            self.channel.running[slot] = task.id
            began = time.perf_counter()
            # An exception escaping `_run` (a plugin's SystemExit, say) ends the process
            # (`_vital`) with this task still published as running: its attempt counts, so a
            # task that keeps killing its thread ends failed instead of looping.
            deferred = self._run(task)
            self.channel.running[slot] = 0
            self.channel.deadlines[slot] = 0.0
            if not deferred:
                self._forget([task])
            took = time.perf_counter() - began
            self.pace = took if self.pace is None else self.pace + PACE_WEIGHT * (took - self.pace)
            self._nudge()

    def _lease_lapsed(self, task: TaskRecord) -> bool:
        """Whether a task taken from the queue may have lost its lease while it waited; if so,
        it is given back unrun.

        A prefetched task waits in the queue while the handler threads are busy. If the worker
        was stopped (SIGSTOP, a frozen VM) or its heartbeats failed for most of a lease period,
        its lease may have expired and another worker may be running the task: starting it
        would run it twice at once. A task is started only while its lease has at least a
        heartbeat interval left, so that the next heartbeat renews it in time.
        """
        with self.lock:
            current = self.inflight.get(task.id) is task
            held_until = self.lease_held_until.get(task.id, 0.0) if current else 0.0
        if not current:  # a newer lease of this task replaced this one; that one is queued too
            return True
        if time.monotonic() < held_until - self.settings.heartbeat_interval:
            return False
        log.warning("task %d (%s): its lease may have lapsed while it waited (this worker was stopped or "
                    "could not renew it); giving it back unrun", task.id, task.key)
        self._give_back([task])
        return True

    def _nudge(self) -> None:
        """Wake the lease loop if it has work now: a refill (below the low-water mark of
        `_lease_loop`) or a stop. Not after every task: a wake-up per task costs a thread switch."""
        if self.nudged:  # rung since the loop last looked: it will look again
            return
        if self._held() < self._low_water(self._prefetch_allowance()) or self._should_stop():
            self.nudged = True
            self.channel.wake.ring()

    def _forget(self, tasks: list[TaskRecord], ran: bool = True) -> None:
        """The outcome of these tasks is settled, or they were given back unrun (``ran`` False,
        not counted towards ``--max-tasks-per-worker``): they no longer hold this worker's leases."""
        with self.lock:
            for task in tasks:
                if self.inflight.get(task.id) is task:  # not a newer lease of the same task (see `lease`)
                    del self.inflight[task.id]
                    self.lease_held_until.pop(task.id, None)
                self.recording.discard(task.id)
                self.cancelled.discard(task.id)
            if ran:
                self.finished += len(tasks)

    def _run(self, task: TaskRecord) -> bool:
        """Run one task and record its outcome; True when a plain success was handed to the
        completer thread (which records it, batched with others, and then forgets the task)."""
        logger = logging.LoggerAdapter(_task_logger(task.key), {"task_id": task.id, "attempt": task.attempts})
        self._event("started", task)
        start = time.perf_counter()
        try:
            task.check_attempts()
            definition = self.plugins.registry.get(task.key)
            args = task.decoded_args()
            definition.check_args(args)
            self._check_init_timeout(task, definition)
            context = task.decoded_context()
            call_hook_safely(self.plugins, "gta_restore_context", context=context)
            ctx = TaskContext(task.id, task.key, task.attempts, task.max_attempts, task.queue, context, logger,
                              prepare_child=self._prepare_child, lease_owner=self.owner)
            with self.lock:
                self.contexts[task.id] = ctx
            try:
                definition.fn(ctx, **args)
            finally:
                with self.lock:
                    self.contexts.pop(task.id, None)
        except BaseException as exc:  # a handler's SystemExit must not kill the thread silently
            self._settle(task, decide(self.plugins, task, exc), time.perf_counter() - start)
        else:
            duration = time.perf_counter() - start
            children, delete = ctx.children, definition.clean_succeeded
            if not children and not delete:
                with self.completed_ready:
                    if self.unwritten_free:  # else (never with leases bounded as now) write it at once
                        place = self.unwritten_free.pop()
                        # published before the handler thread clears its `running` place: a crash
                        # from now on finds the task in one of the two
                        self.channel.unwritten[place] = task.id
                        self.recording.add(task.id)
                        self.completed.append((task, duration, place))
                        self.completed_ready.notify()
                        return True
            if self._record(task, lambda: self.store.complete(self.owner, task.id, children, delete,
                                                                   attempt=task.attempts)):
                self._event("succeeded", task, duration=duration)
        return False

    def _prepare_child(self, key: str, args: Any = None, **options: Any) -> Any:
        """Validate a child task now (as submit would); the row is inserted with the parent's success.

        Runs on the handler's thread, where the parent's context was restored, so the child
        captures it as any submit would (a request or trace id follows the work it caused).
        """
        return prepare(self.runtime, TaskRequest(key, args, **options), capture_context(self.runtime))

    def _check_init_timeout(self, task: TaskRecord, definition: TaskDefinition) -> None:
        """GTA's init_timeout_sensitive: a task that waited too long to start is not run at all.

        The wait counts from the task's due time (``run_at``), so a delayed task is judged by
        how late it starts, not by how far ahead it was scheduled.
        """
        due = task.run_at or task.created_at
        if not definition.init_timeout_sensitive or due is None:
            return
        waited = (dt.datetime.now(dt.timezone.utc) - due).total_seconds()
        if waited > self.settings.initialized_timeout:
            raise Fail(f"not run: due {waited:.0f}s ago, longer than initialized_timeout "
                       f"({self.settings.initialized_timeout:g}s), and the task is init_timeout_sensitive")

    # -- completer thread ----------------------------------------------------------------
    def _completer_loop(self) -> None:
        """Record plain successes in batches: whatever finished while the previous write was
        in flight goes in the next one (group commit, no added delay). A crash before a
        write lands re-runs those tasks; it never loses them."""
        while True:
            with self.completed_ready:
                while not self.completed:
                    self.completed_ready.wait()
            self._flush_completed()

    def _flush_completed(self) -> None:
        with self.flush_lock:
            with self.lock:
                batch, self.completed = self.completed, []
            if not batch:
                return
            ids = [task.id for task, _, _ in batch]
            attempts = [task.attempts for task, _, _ in batch]
            accepted = self._through_outage(lambda: self.store.complete_many(self.owner, ids, attempts),
                                            f"tasks {ids}")
            with self.lock:
                for _, _, place in batch:
                    self.channel.unwritten[place] = 0
                    self.unwritten_free.append(place)
            if accepted is None:  # never landed (logged once); their leases expire and rescue re-runs them
                with self.lock:
                    self.unrecorded.update(ids)
            else:
                succeeded = [(task, duration) for task, duration, _ in batch if task.id in accepted]
                report_task_events(self.plugins, "succeeded", [task for task, _ in succeeded],
                                   durations=[duration for _, duration in succeeded])
                for task, _, _ in batch:
                    if task.id not in accepted:
                        self._rejected(task)
            self._forget([task for task, _, _ in batch])
            self._nudge()

    def _settle(self, task: TaskRecord, outcome: Outcome, duration: float) -> None:
        """Write a failed attempt's outcome (retry or fail, from `outcomes.decide`), fenced."""
        error = outcome.error
        assert error is not None
        if outcome.action is Action.RETRY:
            delay = outcome.delay or 0.0
            if self._record(task, lambda: self.store.retry(self.owner, task.id, delay, outcome.error_text,
                                                           attempt=task.attempts)):
                _task_logger(task.key).info("task %d attempt %d/%d failed (%s); retry in %.1fs", task.id,
                                            task.attempts, task.max_attempts, one_line(error), delay)
                self._event("retried", task, error, duration)
        elif self._record(task, lambda: self.store.fail(self.owner, task.id, outcome.error_text,
                                                        attempt=task.attempts)):
            _task_logger(task.key).warning(
                "task %d failed for good after %d attempt(s): %s", task.id, task.attempts, one_line(error))
            self._event("failed", task, error, duration)

    def _record(self, task: TaskRecord, write: Callable[[], bool]) -> bool:
        """Run a fenced outcome write; True when it landed, False when the lease was lost
        (logged, counted) or the database stayed unreachable for a lease period."""
        with self.lock:
            self.recording.add(task.id)  # from now on a heartbeat may miss it without a loss
        accepted = self._through_outage(write, f"task {task.id}")
        if accepted is False:
            self._rejected(task)
        elif accepted is None:
            with self.lock:
                self.unrecorded.add(task.id)
        return bool(accepted)

    def _through_outage(self, write: Callable[[], T], what: str) -> T | None:
        """Run an outcome write, riding out a database outage for up to one lease period;
        None (logged) if it never landed: the lease then expires and the task is re-run."""
        deadline = time.monotonic() + self.settings.lease_timeout
        pause = 0.1
        while True:
            try:
                return write()
            except (DatabaseUnavailable, peewee.DatabaseError, peewee.InterfaceError) as exc:
                if time.monotonic() + pause > deadline:
                    log.error("could not record the outcome of %s (%s); rescue will re-run it", what, exc)
                    return None
                time.sleep(pause)
                pause = min(pause * 2, 2.0)

    def _rejected(self, task: TaskRecord) -> None:
        """The fence refused this task's outcome: cancelled meanwhile, or its lease was taken over."""
        if task.id in self.cancelled:
            log.info("task %d was cancelled while it ran; its outcome was not recorded", task.id)
            return
        self.leases_lost += 1
        log.warning("lease on task %d was lost before its outcome was recorded; the write was rejected", task.id)
        self._event("lost", task)

    def _event(self, event: str, task: TaskRecord, error: BaseException | None = None,
               duration: float | None = None) -> None:
        report_task_events(self.plugins, event, [task], [error], [duration])

    # -- heartbeat thread -------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_interval
        next_beat = time.monotonic() + interval
        next_cancel_check = time.monotonic() + CANCEL_CHECK_INTERVAL
        orphaned = False
        while True:
            if time.monotonic() >= next_cancel_check:
                next_cancel_check = time.monotonic() + CANCEL_CHECK_INTERVAL
                self._check_cancelled()
            self._unpark()
            if not orphaned and os.getppid() != self.parent_pid:
                orphaned = True
                log.warning("supervisor %d is gone; stopping", self.parent_pid)
                self.channel.request_stop()
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + interval
                with self.lock:
                    ids = list(self.inflight)
                if ids:
                    sent = time.monotonic()
                    try:
                        renewed = self.store.heartbeat(self.owner, ids, self.settings.lease_timeout)
                        if renewed == len(ids) or self._check_renewals(ids, renewed):
                            self._renewed(ids, sent + self.settings.lease_timeout)
                    except (GTAError, peewee.DatabaseError, peewee.InterfaceError) as exc:
                        log.warning("heartbeat failed: %s", exc)
            time.sleep(min(0.5, interval))


    def _check_cancelled(self) -> None:
        """Tell running handlers they were cancelled; for a forced cancel, stop the process.

        Only asks the database while tasks run, so an idle worker sends nothing.
        """
        with self.lock:
            running = [task_id for task_id in self.contexts if task_id not in self.cancelled]
        if not running:
            return
        try:
            found = self.store.cancelled_of(self.owner, running)
        except (GTAError, peewee.DatabaseError, peewee.InterfaceError) as exc:
            log.warning("cancel check failed: %s", exc)
            return
        forced = False
        with self.lock:
            for task_id, force in found.items():
                self.cancelled.add(task_id)
                ctx = self.contexts.get(task_id)
                if ctx is not None:
                    ctx.cancel_event.set()
                forced = forced or force
            others = [task_id for task_id in self.inflight if task_id not in found]
        if found:
            log.info("task(s) %s cancelled while running", sorted(found))
        if forced:
            # a thread cannot be killed: give the innocent tasks back, then end the process
            log.warning("forced cancel of %s: releasing %s and exiting", sorted(found), others)
            try:
                self.store.release(self.owner, others)
            except (GTAError, peewee.DatabaseError, peewee.InterfaceError) as exc:
                log.warning("could not release %s (%s); the supervisor will", others, exc)
            logging.shutdown()
            os._exit(EXIT_CANCEL_FORCED)

    def _renewed(self, ids: list[int], held_until: float) -> None:
        with self.lock:
            for task_id in ids:
                if task_id in self.lease_held_until:
                    self.lease_held_until[task_id] = held_until

    def _check_renewals(self, ids: list[int], renewed: int) -> bool:
        """Warn about leases taken over, not about tasks that merely finished meanwhile;
        whether every lease still held was renewed.

        A handler that records its outcome between our snapshot and the heartbeat leaves a
        row the heartbeat rightly skips, and so does a task cancelled while it runs (its row
        is ``cancelled`` now, while its handler winds down). Only the other tasks whose outcome
        write had not begun even now were certainly still running when the heartbeat ran;
        fewer renewals than those means some lease was lost (the fenced outcome write will
        also say so).
        """
        self._check_cancelled()  # a cancel since the last check explains a skipped row too
        with self.lock:
            unsettled = [task_id for task_id in ids if task_id in self.inflight and task_id not in self.recording
                         and task_id not in self.cancelled]
        if renewed < len(unsettled):
            log.warning("heartbeat renewed %d of %d leases; the others were taken over", renewed, len(unsettled))
            return False
        return True


@functools.lru_cache(maxsize=1024)
def _task_logger(key: str) -> logging.Logger:
    """The ``gta.task.<key>`` logger (getLogger takes a global lock: once per key, not per task)."""
    return logging.getLogger(f"gta.task.{key}")
