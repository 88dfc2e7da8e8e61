"""A worker's leasing room: lease due tasks into the worker's queue, as many as its runner can
start soon, and hand back what it cannot.

Adaptive polling: again at once after a lease that found work, then from
instant_scan_interval doubling up to scan_interval; a wake-up from the supervisor (or from the
runner and completer, `Leaser.nudge`) cuts any wait short; a lease that came back full rings
the supervisor's relay, which wakes the idle workers (`gta_core.supervisor.waking`). Prefetch
holds a little work beyond the handler slots, sized by the pace of the tasks so far.
"""
from __future__ import annotations

import logging
import queue
import random
import time
from collections.abc import Callable

import peewee

from ..config import Settings
from ..db.wakeup import notify_local, wake_key
from ..errors import DatabaseUnavailable, GTAError
from ..store.task_store import TaskStore
from ..tasks import TaskRecord
from .channel import WorkerChannel
from .held_leases import HeldLeases, Room

log = logging.getLogger("gta.worker")

PREFETCH_WINDOW = 0.05  # seconds of work at the current pace a worker may hold beyond its threads
#: a task that has run this long (seconds) is not about to free its slot: while every slot
#: runs one, the worker prefetches nothing (`Leaser.prefetch_allowance`)
LONG_TASK = 0.25
#: while every slot has run its task this long, prefetched tasks still waiting are handed
#: back for idle workers (`Leaser.unpark`)
UNPARK_AFTER = 1.0
#: weight of the newest leased task in the moving share of async tasks (`Leaser.slots`), and
#: the share under which a kind of task counts as absent from this worker's queues
SHARE_WEIGHT = 0.2
ABSENT = 0.05


class Leaser(Room):
    """Leases tasks into ``todo`` for the runner and gives back leases that must not run here.

    Runs on the worker's main thread (`loop`); `unpark` runs on the heartbeat thread and
    `nudge` on the runner's and completer's threads.
    """

    def __init__(self, settings: Settings, store: TaskStore, channel: WorkerChannel, book: HeldLeases,
                 todo: queue.SimpleQueue[TaskRecord | None], keys: tuple[str, ...]) -> None:
        super().__init__(settings, store, channel, book)
        self.todo = todo
        #: the task keys this worker has handlers for: the only ones it leases (`TaskStore.lease`)
        self.keys = keys
        self.nudged = False  # `nudge` rang the lease loop since it last looked
        #: slots of the async runner (0: none), and where leased async tasks go (`route_async`)
        self.async_slots = 0
        self.to_async: Callable[[list[TaskRecord]], None] | None = None
        self.is_async: Callable[[TaskRecord], bool] = lambda task: False
        self.async_share = 0.5  # moving share of async tasks among those leased (unknown at first)

    def route_async(self, slots: int, is_async: Callable[[TaskRecord], bool],
                    accept: Callable[[list[TaskRecord]], None]) -> None:
        """Hand leased tasks for which ``is_async`` holds to ``accept`` (the async runner, which
        runs up to ``slots`` at once) instead of the handler threads' queue."""
        self.async_slots, self.is_async, self.to_async = slots, is_async, accept

    @property
    def slots(self) -> int:
        """Tasks this worker leases to run at once: its handler threads and its async slots.

        A lease cannot choose sync or async rows. A worker whose queues have lately brought only
        async tasks does not lease for its idle threads (and the reverse): what such a lease
        brought would wait behind the busy runner of its kind, be handed back (`unpark`) and be
        leased again, over and over.
        """
        if not self.async_slots:
            return self.settings.threads
        threads = self.settings.threads if self.async_share < 1 - ABSENT else 0
        return threads + (self.async_slots if self.async_share > ABSENT else 0)

    def loop(self) -> None:
        """Lease until the worker is asked to stop (or recycles)."""
        settings, channel = self.settings, self.channel
        idle_delay = settings.instant_scan_interval
        failures = 0
        orphans_possible = False
        while not self.should_stop():
            channel.wake.clear()
            self.nudged = False
            held = self.book.count()
            wait = settings.scan_interval
            ahead = self.prefetch_allowance()
            if held < self.low_water(ahead):
                want = min(settings.batch, self.slots + ahead - held)
                try:
                    tasks = self.store.lease(self.owner, settings.queues, want, settings.lease_timeout, self.keys)
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
                # from when the lease statement was sent, not from before `lease` reconnected
                self.book.add(tasks, tasks.sent)
                if orphans_possible:  # after the new tasks are known, or they would count as orphans
                    orphans_possible = not self.release_orphans()
                self.dispatch(tasks)
                if tasks:
                    if len(tasks) == want:  # more may be due: the supervisor rings the idle workers
                        channel.relay.ring()
                    idle_delay = settings.instant_scan_interval
                    if len(tasks) == want and self.book.count() < self.low_water(ahead):
                        continue  # more may be due: lease again at once
                    wait = settings.scan_interval if len(tasks) == want else idle_delay
                else:
                    wait = idle_delay
                    idle_delay = min(idle_delay * 2, settings.scan_interval)
            if not channel.stop.is_set():  # a stop may have rung just before wake.clear() took the ring
                channel.wake.wait(wait)

    def dispatch(self, tasks: list[TaskRecord]) -> None:
        """Leased tasks to the runner that runs them: async ones to the event loop, the rest to threads."""
        async_tasks = []
        for task in tasks:
            if self.to_async is not None and self.is_async(task):
                async_tasks.append(task)
                self.async_share += SHARE_WEIGHT * (1 - self.async_share)
            else:
                self.todo.put(task)
                self.async_share -= SHARE_WEIGHT * self.async_share
        if async_tasks and self.to_async is not None:
            self.to_async(async_tasks)

    def should_stop(self) -> bool:
        if self.channel.stop.is_set():
            return True
        limit = self.settings.max_tasks_per_worker
        return bool(limit and self.book.finished >= limit)

    def low_water(self, ahead: int) -> int:
        """Lease again below this many held tasks: a slot is (about to be) idle, or the
        prefetched ``ahead`` is half used up."""
        return self.slots + ahead // 2

    def prefetch_allowance(self) -> int:
        """How many tasks to hold leased beyond the slots: about PREFETCH_WINDOW of work at
        the pace tasks have been running, at most ``prefetch``, none before the first task ends.

        Short tasks then arrive in big batches (one lease statement per batch, not per task),
        while a slow task is never parked behind another in a busy worker when an idle worker
        could start it now.
        """
        if not self.settings.prefetch:
            return 0
        ahead = 0.0
        pace = self.book.pace
        if pace is not None and not self.slots_busy_for(LONG_TASK):
            ahead += PREFETCH_WINDOW * self.settings.threads / max(pace, 1e-6)
        async_pace = self.book.async_pace  # the event loop's own pace: its slots free up at their rate
        if self.async_slots and async_pace is not None and not self.slots_busy_for(
                LONG_TASK, self.settings.threads, self.async_slots):
            ahead += PREFETCH_WINDOW * self.async_slots / max(async_pace, 1e-6)
        return min(self.settings.prefetch, int(ahead))

    def slots_busy_for(self, seconds: float, first: int = 0, count: int | None = None) -> bool:
        """Whether every handler thread's slot (or the ``count`` slots from ``first``: the async
        runner's) has been running its current task for ``seconds``."""
        since = time.monotonic() - seconds
        running, started = self.channel.running, self.channel.started
        slots = range(first, first + (self.settings.threads if count is None else count))
        return all(running[slot] and started[slot] <= since for slot in slots)

    def nudge(self) -> None:
        """Wake the lease loop if it has work now: a refill (below the low-water mark of
        `loop`) or a stop. Not after every task: a wake-up per task costs a thread switch."""
        if self.nudged:  # rung since the loop last looked: it will look again
            return
        if self.book.count() < self.low_water(self.prefetch_allowance()) or self.should_stop():
            self.nudged = True
            self.channel.wake.ring()

    def unpark(self) -> None:
        """Hand back prefetched tasks stuck behind long-running ones, unrun and uncounted.

        Prefetch sizes itself by the pace of the tasks so far; a task far slower than that pace
        would otherwise hold the ones queued behind it for its whole run, while other workers
        sit idle (and the monitor reports them as running for long). Once every slot has run
        its task for `UNPARK_AFTER`, what still waits goes back to pending, each release fenced
        on its lease; the lease loop takes no more meanwhile (`prefetch_allowance`).
        """
        if self.todo.empty() or not self.slots_busy_for(UNPARK_AFTER):
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
        for _ in range(stops):  # a shutdown's wake-ups for the handler slots stay queued
            self.todo.put(None)
        mine = [task for task in waiting if self.book.lasts(task) is not None]
        if mine:
            given_back = self.give_back(mine, "handed back unrun: it waited behind long-running tasks")
            log.info("gave back %d of %d prefetched task(s) waiting behind long-running ones",
                     given_back, len(mine))

    def lapsed(self, task: TaskRecord) -> bool:
        """Whether a task taken from the queue may have lost its lease while it waited; if so,
        it is given back unrun.

        A prefetched task waits in the queue while the handler slots are busy. If the worker
        was stopped (SIGSTOP, a frozen VM) or its heartbeats failed for most of a lease period,
        its lease may have expired and another worker may be running the task: starting it
        would run it twice at once. A task is started only while its lease has at least a
        heartbeat interval left, so that the next heartbeat renews it in time.
        """
        held_until = self.book.lasts(task)
        if held_until is None:  # a newer lease of this task replaced this one; that one is queued too
            return True
        if time.monotonic() < held_until - self.settings.heartbeat_interval:
            return False
        log.warning("task %d (%s): its lease may have lapsed while it waited (this worker was stopped or "
                    "could not renew it); giving it back unrun", task.id, task.key)
        self.give_back([task], "handed back unrun: its lease may have lapsed while it waited")
        return True

    def give_back(self, tasks: list[TaskRecord], reason: str = "handed back unrun") -> int:
        """Return leased tasks that never started to pending, uncounted, each release fenced on
        its lease (one lost meanwhile is left to its new holder) and logged with ``reason``; how
        many were released. If the database cannot be reached, lease rescue returns them later,
        with the attempt counted.

        Then the lease loop is woken if this left it room (`nudge`): a slot whose task was given
        back idles until the next lease, which otherwise came a whole scan interval later. Idle
        workers are woken to take them at once too, rather than at their next poll: on
        PostgreSQL by the release's own ``NOTIFY`` (every host), elsewhere through this host's
        wake-up socket (other hosts poll)."""
        given_back = 0
        for task in tasks:
            try:
                given_back += self.store.release_lease(self.owner, task.id, task.attempts, reason)
            except (GTAError, peewee.DatabaseError, peewee.InterfaceError) as exc:
                log.warning("could not give task %d back (%s); lease rescue will", task.id, exc)
        self.book.forget(tasks, ran=False)
        self.nudge()
        if given_back and self.store.dialect != "postgres":
            notify_local(wake_key(self.store.db, self.store.table))
        return given_back

    def release_orphans(self) -> bool:
        """After a failed lease, give back rows it may have leased before the connection broke.

        Heartbeats renew only tasks this worker knows, so such orphans would otherwise wait for
        rescue and lose an attempt. Returns False if the database is still unreachable.
        """
        try:
            known = self.book.known()
            orphans = [task.id for task in self.store.owned(self.owner) if task.id not in known]
            if orphans:
                log.warning("releasing %d task(s) leased by a statement whose reply was lost", len(orphans))
                self.store.release(self.owner, orphans, "handed back unrun: leased by a statement whose reply "
                                                        "was lost")
            return True
        except (GTAError, peewee.DatabaseError, peewee.InterfaceError):
            return False

    def release_all(self) -> None:
        """At shutdown, after the runner drained: every lease still held back to pending."""
        leftover = self.book.take_all()
        if leftover:
            try:
                released = self.store.release(self.owner, leftover, "handed back unrun: its worker stopped")
                log.info("released %d unfinished task(s) back to pending: %s", released, leftover)
            except Exception as exc:  # the supervisor releases them after we exit
                log.warning("could not release %s (%s); the supervisor will", leftover, exc)
