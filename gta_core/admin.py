"""The operator's operations that the ``gta`` commands and the dashboard share: re-running
failed or cancelled tasks, deleting finished ones, the counts of ``gta stats`` and the
overview. Nothing here prints: `cli.commands` prints for the command line, the dashboard
renders pages.

Every function takes the configured `Runtime`. Problems are raised as `GTAError`; nothing is
written when an operation refuses.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .db.connect import check_connection, describe_url
from .errors import GTAError, TaskNotFound
from .runtime import Runtime
from .store.roster import supervisors, unhandled
from .store.sql.statements import FINAL_STATUSES
from .store.sql.workflows import WAITING
from .store.task_store import summarize_by_queue

STATUSES = ("pending", "running", WAITING, *FINAL_STATUSES)
#: the built-in periodic tasks (`gta_plugins.monitor`, `gta_plugins.cleanup`), whose runs `gta list`
#: leaves out unless asked (``--all``, or ``--key`` naming one)
BUILT_IN_KEYS = ("gta_monitor", "gta_cleanup")
RETRYABLE = ("failed", "cancelled")
THROUGHPUT_WINDOW = 60.0
BATCH = 1000


def ready(runtime: Runtime) -> None:
    """Connect (one clear line if the database is unreachable) and check the table's schema."""
    check_connection(runtime.db, runtime.settings.database_url)
    runtime.store.require_schema()


def require_tasks(runtime: Runtime, ids: Sequence[int]) -> dict[int, str]:
    """Each task's status; `TaskNotFound` naming every id that has no row."""
    statuses = runtime.store.statuses(list(ids))
    missing = [task_id for task_id in ids if task_id not in statuses]
    if missing:
        raise TaskNotFound(f"no task with id {', '.join(map(str, missing))}")
    return statuses


def task_is(task_id: int, status: str) -> str:
    """A task's status in a sentence: "task 3 is pending", "task 3 succeeded", "task 3 was cancelled"."""
    if status in FINAL_STATUSES:
        return f"task {task_id} {'was cancelled' if status == 'cancelled' else status}"
    return f"task {task_id} is {status}"


def rerun_tasks(runtime: Runtime, ids: Sequence[int], by: str | None = None) -> dict[int, str]:
    """Put failed or cancelled tasks back to pending (all of them or, with a `GTAError`, none),
    logged as done ``by`` whom; the status each had before. Shared by ``gta retry`` and the dashboard."""
    statuses = require_tasks(runtime, ids)
    for task_id in ids:
        if statuses[task_id] not in RETRYABLE:
            raise GTAError(f"{task_is(task_id, statuses[task_id])}: only failed or cancelled tasks can be retried "
                           "(nothing was changed)")
    before = runtime.store.rerun(ids, by)
    runtime.wake_idle_workers()
    return {task_id: before.get(task_id, statuses[task_id]) for task_id in ids}


def rerun_batches(runtime: Runtime, batches: Iterable[Sequence[int]], counted: Sequence[str] = RETRYABLE, *,
                  by: str | None = None) -> int:
    """Rerun each batch of ids (`TaskStore.rerun` leaves other statuses alone), logged as done
    ``by`` whom; how many had one of the ``counted`` statuses, i.e. were rerun. Shared by
    ``gta retry --status`` and the dashboard."""
    total = 0
    for batch in batches:
        before = runtime.store.rerun(batch, by)
        total += sum(1 for was in before.values() if was in counted)
    if total:
        runtime.wake_idle_workers()
    return total


def ids_with_status(runtime: Runtime, status: str) -> Iterable[list[int]]:
    """The ids of the tasks with ``status``, in batches of `BATCH`, in id order."""
    after = 0
    while batch := runtime.store.ids_with_status(status, after, BATCH):
        yield batch
        after = batch[-1]


def purge_finished(runtime: Runtime, age: float, statuses: Sequence[str] = FINAL_STATUSES) -> int:
    """Delete tasks with one of the final ``statuses`` that finished more than ``age`` seconds
    ago, a batch per transaction; how many. Shared by ``gta purge`` and the dashboard."""
    batch = runtime.settings.cleanup_batch
    total = 0
    while True:
        deleted = runtime.store.delete_finished(age, batch, statuses)
        total += deleted
        if deleted < batch:
            return total


def stats_data(runtime: Runtime) -> dict[str, Any]:
    """Counts by queue and status, the oldest due pending task's age in seconds (None: none
    due), and last minute's successes; per queue, and for all queues together."""
    store = runtime.store
    counts = store.counts()
    done = store.succeeded_per_queue(THROUGHPUT_WINDOW)
    groups = store.pending_by_key(runtime.settings.initialized_timeout)
    oldest: dict[str, float] = {}
    for queue, _, due, _, now in summarize_by_queue(groups):
        if due is not None and now is not None:
            oldest[queue] = max(0.0, (now - due).total_seconds())

    def summary(queue: str, in_queue: Callable[[str], bool], oldest_due: float | None, succeeded: int
                ) -> dict[str, Any]:
        by_status = {status: sum(count for (q, s), count in counts.items() if s == status and in_queue(q))
                     for status in STATUSES}
        return {"queue": queue, **by_status, "oldest_due_seconds": oldest_due, "succeeded_last_minute": succeeded}

    queues = sorted({queue for queue, _ in counts} | set(done))
    return {
        "table": runtime.settings.table,
        "database": describe_url(runtime.settings.database_url),
        "time": dt.datetime.now(dt.timezone.utc).isoformat(),
        "queues": [summary(queue, queue.__eq__, oldest.get(queue), done.get(queue, 0)) for queue in queues],
        "all": summary("(all)", lambda _: True, max(oldest.values(), default=None), sum(done.values())),
        "unhandled": [{"key": group.key, "queue": group.queue, "waiting": group.waiting,
                       "oldest_due": group.oldest_due.isoformat() if group.oldest_due else None}
                      for group in unhandled(groups, supervisors(store))],
    }
