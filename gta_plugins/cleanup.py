"""The built-in cleanup: a periodic task that deletes finished tasks older than the retention.

Each run (task key ``gta_cleanup``, enqueued once per slot cluster-wide every
``cleanup_interval``) deletes succeeded, failed and cancelled tasks whose ``finished_at`` is
older than ``storage_timeout``, ``cleanup_batch`` rows per short transaction, until a batch
comes back short or the run's time budget (the interval, at least 5 s) is spent; the next slot
goes on from there. A batch picks ids on the finished_at index (``SKIP LOCKED`` on PostgreSQL
and MySQL/MariaDB, so overlapping runs split the work) and deletes exactly those by primary
key, re-checking status and age: pending and running rows are never read, locked or deleted,
so cleanup neither blocks nor deadlocks leasing. Disable it with ``--disable-plugin cleanup``.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

from gta_core import Periodic, Settings, TaskContext, TaskDefinition, get_runtime, hookimpl, periodic, task
from gta_core.runtime import Runtime
from gta_core.store.task_store import TaskStore

log = logging.getLogger("gta.cleanup")

KEY = "gta_cleanup"
NAME = "cleanup"
PRIORITY = 1000


def cleanup_budget(settings: Settings) -> float:
    """How long one run keeps deleting before it leaves the rest to the next slot."""
    return max(5.0, settings.cleanup_interval)


def delete_expired(store: TaskStore, older_than: float, batch: int, budget: float,
                   stop: Callable[[], bool] = lambda: False) -> tuple[int, int]:
    """Delete finished tasks older than ``older_than`` seconds, ``batch`` rows per transaction,
    until a batch comes back short, ``budget`` seconds are spent or ``stop()``; (rows, batches)."""
    deadline = time.monotonic() + budget
    total = batches = 0
    while True:
        deleted = store.delete_finished(older_than, batch)
        total += deleted
        batches += 1 if deleted else 0
        if deleted < batch or time.monotonic() >= deadline or stop():
            return total, batches


def cleanup(ctx: TaskContext) -> int:
    """Delete finished tasks past ``storage_timeout``; how many were deleted."""
    runtime = get_runtime()
    settings = runtime.settings
    started = time.monotonic()
    total, batches = delete_expired(runtime.store, settings.storage_timeout, settings.cleanup_batch,
                                    cleanup_budget(settings), lambda: ctx.cancelled)
    if total:
        log.info("cleanup deleted %d finished task(s) older than %gs in %d batch(es) of at most %d, in %.2fs",
                 total, settings.storage_timeout, batches, settings.cleanup_batch, time.monotonic() - started)
    return total


@hookimpl
def gta_handlers(gta: Runtime) -> list[TaskDefinition]:
    timeout = cleanup_budget(gta.settings) + 120.0  # a batch that hangs past the budget
    return [task(key=KEY, max_attempts=2, timeout=timeout, priority=PRIORITY)(cleanup)]


@hookimpl
def gta_periodic(gta: Runtime) -> list[Periodic]:
    settings = gta.settings
    return [periodic(NAME, key=KEY, every=settings.cleanup_interval, queue=settings.queues[0], priority=PRIORITY)]
