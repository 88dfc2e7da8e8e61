"""The rescuer: puts expired leases back, cluster-wide, every ``rescue_interval``.

A lease expires when its worker stopped renewing it (hung, stopped, its host or supervisor
gone). Each rescued attempt goes through the retry policy and its backoff (`outcomes.decide`);
`TaskStore.rescue_expired` is conditional and batched, so every supervisor runs this
loop and they never take the same row twice. This loop does nothing else: a slow or failing
release of a dead worker's leases (the janitor's job) can no longer hold rescues up.
"""
from __future__ import annotations

import logging
import threading

import peewee

from ...db.connect import drop_connection
from ...errors import GTAError, LeaseExpired
from ...outcomes import decide
from ...plugins import report_task_events
from ...runtime import Runtime
from ...scopes import scope
from ...tasks import TaskRecord
from .runner import Outage, Service

log = logging.getLogger("gta.supervisor")

BATCH = 500


class Rescuer(Service):
    name = "rescuer"

    def __init__(self, runtime: Runtime, outage: Outage) -> None:
        self.runtime = runtime
        self.outage = outage

    def step(self, done: threading.Event) -> None:
        self.rescue()
        done.wait(self.runtime.settings.rescue_interval)

    def rescue(self) -> None:
        """Rescue every expired lease now, in batches; a database error waits for the next round."""
        try:
            while True:
                with scope(self.runtime.plugins, "gta_settle", kind="rescue", worker=None):
                    rescued = self.runtime.store.rescue_expired(BATCH, self._delay)
                    for task in rescued:
                        log.warning("task %d (%s) lease expired; now %s", task.id, task.key, task.status)
                    report_task_events(self.runtime.plugins, "rescued", rescued)
                if len(rescued) < BATCH:
                    return
        except (GTAError, peewee.DatabaseError, peewee.InterfaceError) as exc:
            log.warning("lease rescue failed: %s", exc)
            self.outage.failed()

    def _delay(self, task: TaskRecord, reason: str) -> float | None:
        """The outcome rule for a lease nobody renewed: the retry policy's delay, None to fail."""
        return decide(self.runtime.plugins, task, LeaseExpired(reason)).delay

    def close(self) -> None:
        drop_connection(self.runtime.db)
