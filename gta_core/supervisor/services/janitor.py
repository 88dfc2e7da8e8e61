"""The janitor: settles a dead worker's leases at once, instead of a lease period later.

The supervisor's main loop reaps a worker and queues a `DeadWorker`; this loop writes the
successes the worker had not written yet (they ran to the end and must not run again), sends
the tasks it was executing down the normal retry path (the attempt counts), and releases the
rest uncounted. A job that keeps failing (the database is away) is retried for one lease
period, each failure logged; after that its leases have expired and are the rescuer's.
"""
from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time

import peewee

from ...db.connect import drop_connection
from ...errors import GTAError
from ...outcomes import Action, decide
from ...plugins import report_task_events
from ...runtime import Runtime
from ...scopes import scope
from .runner import Outage, Service

log = logging.getLogger("gta.supervisor")

#: how long the loop waits for a job before its iteration ends (so the runner sees it alive)
IDLE_STEP = 1.0


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


class Janitor(Service):
    name = "janitor"

    def __init__(self, runtime: Runtime, outage: Outage) -> None:
        self.runtime = runtime
        #: dead workers to settle; None only wakes the loop (to see that the supervisor stops)
        self.jobs: queue.SimpleQueue[DeadWorker | None] = queue.SimpleQueue()
        #: seen once any of the supervisor's statements failed after it began to stop: the
        #: leases still to settle are left to expire (`settle_all`)
        self.outage = outage

    def interrupt(self) -> None:
        """End the wait for a job now (the supervisor is stopping)."""
        self.jobs.put(None)

    def step(self, done: threading.Event) -> None:
        try:
            job = self.jobs.get(timeout=IDLE_STEP)
        except queue.Empty:
            return
        if job is not None:
            self.settle(job, done)

    def settle(self, job: DeadWorker, done: threading.Event) -> None:
        """Give a dead worker's leases back; if the database cannot be reached they expire and
        are rescued (an `Outage`, if the supervisor is stopping). Once ``done`` is set there is
        one try only, so an unreachable database cannot hold the exit up."""
        give_up_at = time.monotonic() + self.runtime.settings.lease_timeout
        attempt = 0
        while True:
            attempt += 1
            try:
                with scope(self.runtime.plugins, "gta_settle", kind="janitor", worker=job.owner):
                    self._settle(job)
                return
            except (GTAError, peewee.DatabaseError, peewee.InterfaceError) as exc:
                if done.is_set() or time.monotonic() >= give_up_at:
                    log.error("could not release leases of %s (%s); they will expire and be rescued",
                              job.owner, exc)
                    self.outage.failed()
                    return
                log.warning("releasing leases of %s failed (%s); trying again", job.owner, exc)
                done.wait(min(2.0, 0.2 * 2 ** attempt))

    def settle_all(self, done: threading.Event) -> None:
        """At exit, on the caller's thread (the loop has stopped): settle every queued job.
        After one failure of any of the supervisor's statements since it began to stop (here,
        in the loop's last step, in another service) the database is taken as unreachable:
        every statement would wait out its timeout, so the leases are left to expire and be
        rescued (`Outage`)."""
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                return
            if job is None:
                continue
            if not self.outage.seen:
                self.settle(job, done)
            else:
                log.error("could not release leases of %s (the database is unreachable); they will expire "
                          "and be rescued", job.owner)

    def _settle(self, job: DeadWorker) -> None:
        store, plugins = self.runtime.store, self.runtime.plugins
        if job.succeeded:
            self._record_successes(job)
        if job.counted:
            for task in store.owned(job.owner):
                if task.id not in job.counted:
                    continue
                error = job.counted[task.id]
                outcome = decide(plugins, task, error)
                if outcome.action is Action.RETRY:
                    landed = store.retry(job.owner, task.id, outcome.delay or 0.0, outcome.error_text,
                                         attempt=task.attempts, entry=outcome.entry())
                else:
                    landed = store.fail(job.owner, task.id, outcome.error_text, attempt=task.attempts,
                                        group_id=task.group_id, entry=outcome.entry())
                if landed:  # fenced: rescue may have taken the lease meanwhile; report only our outcome
                    report_task_events(plugins, outcome.event, [task], [error])
        released = store.release(job.owner, reason=f"handed back: its worker {job.owner} ended without recording it")
        if released:
            log.info("released %d task(s) leased by %s", released, job.owner)

    def _record_successes(self, job: DeadWorker) -> None:
        """Write the successes a dead worker had not written yet (fenced: a lease that expired and
        was taken over meanwhile is left alone); they ran to the end, so they must not run again."""
        store = self.runtime.store
        tasks = {task.id: task for task in store.owned(job.owner) if task.id in job.succeeded}
        accepted = store.complete_many(job.owner, list(tasks), [task.attempts for task in tasks.values()])
        for task_id in sorted(accepted):
            log.info("task %d: recorded the success its worker %s had not written before dying", task_id, job.owner)
        report_task_events(self.runtime.plugins, "succeeded", [tasks[task_id] for task_id in sorted(accepted)])

    def close(self) -> None:
        drop_connection(self.runtime.db)
