"""The operations side's queries (the monitor, cleanup and the admin CLI), mixed into `TaskStore`.

Kept apart from the engine's queries in `store/task_store.py` as their statements are kept apart in
`store/sql/operations.py`: none of them runs on a worker's hot path.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..db.connect import utc_text
from ..db.transactions import in_transaction
from .attempts import RERUN, AttemptQueries, LogEntry
from .rows import parse_timestamp, placeholders, task_dict
from .sql.operations import OperationStatements, operation_statements
from .sql.statements import FINAL_STATUSES, RESCUED_ERROR_PREFIX
from .sql.workflows import workflow_statements


class OperationQueries(AttemptQueries):
    """What the operations side asks of the task table (logging its actions in the attempt log)."""

    statuses: Callable[[Sequence[int]], dict[int, str]]  # from `TaskStore`
    reopen_groups: Callable[[Sequence[int]], None]  # from `WorkflowQueries`

    @property
    def ops(self) -> OperationStatements:
        return operation_statements(self.dialect, self.table)

    def _moment(self, moment: dt.datetime) -> Any:
        """An aware datetime as a parameter compared with timestamp columns."""
        naive = moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return utc_text(naive) if self.dialect == "sqlite" else naive

    def _tasks(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        return [task_dict(row) for row in self._execute(sql, params).fetchall()]

    def latest_start(self, dedupe_keys: Sequence[str]) -> dt.datetime | None:
        """When the latest succeeded task among those with ``dedupe_keys`` started (the monitor's
        watermark: its previous runs are the previous slots of its periodic definition)."""
        if not dedupe_keys:
            return None
        statement = self._d.fix(self.ops.latest_start.fill(keys=placeholders(len(dedupe_keys))))
        row = self._execute(statement, tuple(dedupe_keys)).fetchone()
        return parse_timestamp(row[0]) if row else None

    def running_too_long(self, seconds: float, limit: int) -> list[dict[str, Any]]:
        """Running tasks started more than ``seconds`` ago (database clock), oldest first."""
        return self._tasks(self.ops.running_too_long, (self._secs(-seconds), limit))

    def pending_too_long(self, seconds: float, limit: int) -> list[dict[str, Any]]:
        """Pending tasks due for more than ``seconds`` (database clock), longest waiting first."""
        return self._tasks(self.ops.pending_too_long, (self._secs(-seconds), limit))

    def failed_between(self, since: dt.datetime, until: dt.datetime, limit: int) -> list[dict[str, Any]]:
        """Tasks that failed for good in (since, until]."""
        return self._tasks(self.ops.failed_between, (self._moment(since), self._moment(until), limit))

    def rescued_between(self, since: dt.datetime, until: dt.datetime, limit: int) -> list[dict[str, Any]]:
        """Tasks whose expired lease was taken back by rescue in (since, until], as far as the
        row still tells (see `OperationStatements.rescued_between`), by id."""
        pattern = RESCUED_ERROR_PREFIX + "%"
        a, b = self._moment(since), self._moment(until)
        return self._tasks(self.ops.rescued_between,
                           (pattern, a, b, pattern, a, b, pattern, a, a, b, pattern, a, b, limit))

    def delete_finished(self, older_than: float, limit: int, statuses: Sequence[str] = FINAL_STATUSES) -> int:
        """Delete up to ``limit`` tasks with one of the final ``statuses`` that finished more than
        ``older_than`` seconds ago, in one short transaction; how many were deleted.

        Ids are picked first on the finished_at index (``SKIP LOCKED`` where there is one, so
        concurrent cleanups split the work) and deleted by primary key: pending and running
        rows, which leasing locks, are never read or locked.
        """
        if not statuses or not set(statuses) <= set(FINAL_STATUSES):
            raise ValueError(f"only finished tasks can be deleted, not {', '.join(statuses) or 'none'}")
        marks, age = placeholders(len(statuses)), self._secs(-older_than)
        select = self._d.fix(self.ops.finished_ids.fill(statuses=marks))

        def batch() -> int:
            ids = [row[0] for row in self._execute(select, (age, *statuses, limit)).fetchall()]
            if len(ids) < limit:  # the last batch of a run: finished groups go too
                self._execute(workflow_statements(self.dialect, self.table).delete_finished_groups, (age,))
            if not ids:
                return 0
            self.delete_attempts(ids)  # the rows picked are locked (SQLite: BEGIN IMMEDIATE): all go below
            delete = self._d.fix(self.ops.delete_finished.fill(ids=placeholders(len(ids)), statuses=marks))
            return int(self._execute(delete, (*ids, *statuses, age)).rowcount)
        return int(in_transaction(self.db, batch))

    def list_tasks(self, status: str | None = None, queue: str | None = None, key: str | None = None,
                   limit: int = 50, hidden_keys: Sequence[str] = ()) -> list[dict[str, Any]]:
        """The newest ``limit`` tasks matching every filter given and of none of the ``hidden_keys``,
        newest first."""
        filters = [(f"{column} = ?", [value]) for column, value in (("status", status), ("queue", queue),
                                                                    (self._d.q("key"), key)) if value is not None]
        if hidden_keys:
            filters.append((f"{self._d.q('key')} NOT IN ({placeholders(len(hidden_keys))})", list(hidden_keys)))
        where = (" WHERE " + " AND ".join(condition for condition, _ in filters)) if filters else ""
        statement = self._d.fix(self.ops.list.fill(where=where))
        return self._tasks(statement, (*(value for _, values in filters for value in values), limit))

    def succeeded_per_queue(self, seconds: float) -> dict[str, int]:
        """Tasks that succeeded in the last ``seconds`` (database clock), by queue."""
        rows = self._execute(self.ops.succeeded_per_queue, (self._secs(-seconds),)).fetchall()
        return {queue: int(count) for queue, count in rows}

    def ids_with_status(self, status: str, after_id: int, limit: int) -> list[int]:
        """Up to ``limit`` ids of tasks with ``status`` above ``after_id``, ascending (a cursor)."""
        return [row[0] for row in self._execute(self.ops.ids_with_status, (status, after_id, limit)).fetchall()]

    def rerun(self, ids: Sequence[int], by: str | None = None) -> dict[int, str]:
        """GTA's ForceRerunTasks: failed or cancelled tasks back to pending, due now, attempts
        reset (the previous error is kept in last_error), each logged as rerun ``by`` whom.
        Other tasks are left alone.

        Returns the status each id had before (ids that do not exist are left out). On
        PostgreSQL the workers are notified in the same transaction.
        """
        ids = list(ids)
        if not ids:
            return {}

        def write() -> dict[int, str]:
            before = self.statuses(ids)
            rerun = self.lock_rows(ids, "status IN ('failed', 'cancelled')")
            if not rerun:
                return before
            marks = placeholders(len(rerun))
            self.log_rows(rerun, LogEntry(RERUN, actor=by))
            self.reopen_groups(rerun)
            self._execute(self._d.fix(self.ops.rerun.fill(ids=marks)), rerun)
            if self.dialect == "postgres":
                queues = self._execute(self._d.fix(self.ops.queues_of.fill(ids=marks)), rerun).fetchall()
                for (queue,) in sorted(queues):
                    self._execute(self.sql.notify, (f"gta_{self.table}", queue))
            return before
        return in_transaction(self.db, write)

    # -- queue controls ----------------------------------------------------------------------
    def pause_queue(self, name: str, by: str | None, reason: str | None) -> bool:
        """Pause a queue (leasing skips it from the commit on); False when it was paused already
        (it keeps its time, author and reason)."""
        def write() -> bool:
            self._execute(self.ops.add_queue, (name,))
            paused: bool = self._execute(self.ops.pause, (by, reason, name)).rowcount == 1
            return paused
        return in_transaction(self.db, write)

    def resume_queue(self, name: str, by: str | None) -> bool:
        """Let leasing take a paused queue's tasks again; False when it was not paused. On
        PostgreSQL the workers are notified in the same transaction."""
        def write() -> bool:
            changed: bool = self._execute(self.ops.resume, (by, name)).rowcount == 1
            if changed and self.dialect == "postgres":
                self._execute(self.sql.notify, (f"gta_{self.table}", name))
            return changed
        return in_transaction(self.db, write)

    def queue_controls(self) -> list[QueueControl]:
        """Every queue ever paused, by name: paused now or not, since when, by whom, why."""
        return [_queue_control(row) for row in self._execute(self.ops.queue_controls).fetchall()]

    # -- the roster of supervisors -------------------------------------------------------------
    def advertise(self, name: str, host: str, pid: int, queues: Sequence[str], keys: Mapping[str, str],
                  alive_for: float) -> None:
        """Write (or renew) supervisor ``name``'s row: it serves ``queues`` with handlers for the
        task ``keys`` (each with its own queue), and counts as live for ``alive_for`` seconds
        (database clock)."""
        self._write(self.ops.advertise, (name, host, pid, json.dumps(list(queues)),
                                         json.dumps(dict(sorted(keys.items()))), self._secs(alive_for)))

    def withdraw(self, name: str) -> None:
        """Remove supervisor ``name``'s row (it stops)."""
        self._write(self.ops.withdraw, (name,))

    def forget_dead(self, after: float) -> int:
        """Delete the rows of supervisors dead for more than ``after`` seconds; how many."""
        return self._write(self.ops.forget_dead, (self._secs(-after),))

    def roster(self) -> list[tuple[Any, ...]]:
        """Every supervisor's row (`OperationStatements.roster`), by name."""
        return [tuple(row) for row in self._execute(self.ops.roster).fetchall()]

    def pending_due(self, key: str, queue: str, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` due pending tasks of task ``key`` in ``queue``, longest waiting first."""
        return self._tasks(self.ops.pending_due, (queue, key, limit))


@dataclasses.dataclass(frozen=True)
class QueueControl:
    """A row of the queues table: whether ``name`` is paused, since when, by whom and why
    (``changed_*`` of the latest pause or resume)."""

    name: str
    paused: bool
    changed_at: dt.datetime | None
    changed_by: str | None
    reason: str | None


def _queue_control(row: Sequence[Any]) -> QueueControl:
    name, paused, changed_at, changed_by, reason = row
    return QueueControl(name, bool(paused), parse_timestamp(changed_at), changed_by, reason)
