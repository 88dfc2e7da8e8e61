"""The periodic scheduler: enqueues each periodic task's latest slot, once cluster-wide.

Every supervisor runs this loop; the slot's dedupe key (``periodic:<name>:<slot>``) makes
the insert happen once however many try. After downtime only the latest slot is caught up.
"""
from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
from collections.abc import Callable, Sequence

import peewee

from ...db.connect import drop_connection
from ...db.transactions import in_transaction
from ...errors import GTAError, PluginError
from ...plugins import periodic_definitions
from ...runtime import Runtime
from ...schedules import Periodic
from ...scopes import Submission, scope
from ...validation import TaskRequest, prepare
from .runner import Service

log = logging.getLogger("gta.supervisor")


class Scheduler(Service):
    name = "scheduler"

    def __init__(self, runtime: Runtime, periodics: Sequence[Periodic], wake_workers: Callable[[], None]) -> None:
        self.runtime = runtime
        self.periodics = list(periodics)
        self.wake_workers = wake_workers
        #: the last slot enqueued (or skipped) per periodic task; kept across restarts of the loop
        self.last: dict[str, str] = {}
        # a list, not min(1.0, *intervals): with cron schedules only that is min(1.0), a TypeError
        # that killed this thread, so cron-only periodic tasks were never enqueued
        self.tick = max(0.2, min([1.0, *(p.every / 4 for p in self.periodics if p.every)]))

    def step(self, done: threading.Event) -> None:
        self.enqueue_due()
        done.wait(self.tick)

    def enqueue_due(self) -> None:
        """Enqueue each periodic task's latest slot if not done yet.

        A slot older than storage_timeout is not enqueued: its row (the dedupe memory) may
        already be cleaned up, and running it again would be a duplicate, not a catch-up.
        """
        now = dt.datetime.now(dt.timezone.utc)
        for job in self.periodics:
            slot = job.latest_slot(now)
            if slot is None or self.last.get(job.name) == slot[0]:
                continue
            label, moment = slot
            if (now - moment).total_seconds() > self.runtime.settings.storage_timeout:
                self.last[job.name] = label
                continue
            request = TaskRequest(job.key, job.args, run_at=moment, queue=job.queue, priority=job.priority,
                                  dedupe_key=job.dedupe_key(label))
            try:
                submission = Submission([prepare(self.runtime, request)])
                with scope(self.runtime.plugins, "gta_submit", submission=submission):
                    submission.written(in_transaction(self.runtime.db,
                                                      functools.partial(self.runtime.store.insert, submission.tasks)))
            except (GTAError, peewee.DatabaseError, peewee.InterfaceError) as exc:
                log.warning("could not enqueue periodic task %s slot %s: %s", job.name, label, exc)
                continue
            self.last[job.name] = label
            self.wake_workers()

    def close(self) -> None:
        drop_connection(self.runtime.db)


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
