"""Reading a task's state from Python: ``gta_core.status(task_id)``.

A snapshot of one row, as a frozen `TaskState`, or None when no row has the id (it never
existed, or cleanup/``gta purge`` deleted it after it finished: both are ordinary outcomes a
caller must handle, so they are a value, not an exception). Fields are added at the end with
defaults, so code that reads a `TaskState` keeps working as GTA stores more (results). The row
holds the latest attempt only; `TaskState.attempt_log` (or `gta_core.attempts`) reads them all.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from .attempts import Attempt, attempts
from .handles import OWN_TRANSACTION
from .handles.api_errors import gta_errors
from .handles.peewee import database_of
from .runtime import get_runtime
from .store.sql.statements import FINAL_STATUSES
from .submit import task_id_list


@dataclasses.dataclass(frozen=True)
class TaskState:
    """One task as its row stood when `status` read it (timestamps aware UTC)."""

    id: int
    key: str
    queue: str
    status: str  # pending, running, succeeded, failed or cancelled
    attempts: int  # attempts started so far (a running task counts its current one)
    max_attempts: int
    priority: int
    run_at: dt.datetime | None  # when it is (or was last) due
    last_error: str | None  # the latest failure's message and traceback, kept after a retry succeeds
    created_at: dt.datetime | None
    updated_at: dt.datetime | None
    started_at: dt.datetime | None  # the latest attempt's start (every attempt's: `attempt_log`)
    finished_at: dt.datetime | None
    parent_id: int | None = None
    dedupe_key: str | None = None
    order_key: str | None = None

    def attempt_log(self, db: Any = OWN_TRANSACTION) -> list[Attempt]:
        """This task's attempts and operator actions, oldest first, read now
        (`gta_core.attempts`); empty once the row is gone."""
        return attempts(self.id, db) or []

    @property
    def final(self) -> bool:
        """True once the task is succeeded, failed or cancelled (it changes no more unless an
        operator runs ``gta retry``)."""
        return self.status in FINAL_STATUSES


FIELDS = tuple(field.name for field in dataclasses.fields(TaskState))


@gta_errors
def status(task_id: int, db: Any = OWN_TRANSACTION) -> TaskState | None:
    """The state of task ``task_id``, or None when no row has that id.

    ``db`` is a handle as for `submit` (by default GTA's own connection); pass your transaction
    to see a task it submitted and has not committed yet.
    """
    (checked,) = task_id_list([task_id])
    runtime = get_runtime()
    row = runtime.store_for(database_of(db, runtime, "db")).get(checked)
    return None if row is None else from_row(row)


def from_row(row: dict[str, Any]) -> TaskState:
    """A `TaskState` from `TaskStore.get`'s columns."""
    return TaskState(**{name: row[name] for name in FIELDS})
