"""The dashboard's writes, each recorded as an operator's action done by `ACTOR`.

Retry and cancel go through the same code as ``gta retry`` and ``gta cancel`` (`admin`, the
store); pause and resume through the queues table as ``gta pause``/``gta resume`` do. The
task's attempt log keeps who retried or cancelled it; the queues table who paused it.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from .. import admin
from ..db.transactions import in_transaction
from ..metrics.catalog import Schedule
from ..runtime import Runtime

#: who the attempt log and the queues table record the dashboard's actions as
ACTOR = "dashboard"


def retry(runtime: Runtime, ids: Sequence[int]) -> dict[int, str]:
    """Failed or cancelled tasks back to pending, all or none (`admin.rerun_tasks`)."""
    return admin.rerun_tasks(runtime, ids, ACTOR)


def retry_batches(runtime: Runtime, batches: Iterable[Sequence[int]]) -> int:
    """Each batch's failed or cancelled tasks back to pending; how many were."""
    return admin.rerun_batches(runtime, batches, by=ACTOR)


def cancel(runtime: Runtime, ids: Sequence[int]) -> dict[int, str]:
    """Pending, running or waiting tasks cancelled; each one's status before."""
    return runtime.store.cancel(ids, by=ACTOR)


def pause(runtime: Runtime, queue: str, reason: str | None) -> bool:
    """Pause ``queue`` for every supervisor; False if it was paused already."""
    return runtime.store.pause_queue(queue, ACTOR, reason)


def resume(runtime: Runtime, queue: str) -> bool:
    """Resume ``queue``, waking this host's workers (PostgreSQL's NOTIFY rode with the write)."""
    resumed = runtime.store.resume_queue(queue, ACTOR)
    if resumed:
        runtime.wake_idle_workers()
    return resumed


def run_now(runtime: Runtime, schedule: Schedule) -> int:
    """Insert one run of a periodic task, due now, outside its schedule; its id."""
    (task_id,) = in_transaction(runtime.db, lambda: runtime.store.insert([schedule.run_now()]))
    runtime.wake_idle_workers()
    return int(task_id)
