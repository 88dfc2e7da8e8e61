"""The data-access layer: one named method per query. Workers and supervisors never build SQL.

Every write to a leased row is fenced by ``lease_owner`` and ``status = 'running'``; a fenced
write that touches no row means the lease was lost, and the caller is told so (never
overwrites). Writes run in short transactions (``BEGIN IMMEDIATE`` on SQLite) retried on
deadlock and lock-wait errors by `db.transactions.in_transaction`.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import peewee

from ..db.driver_errors import is_retryable
from ..db.transactions import in_statement, in_transaction
from ..errors import LeaseExpired
from ..tasks import TaskRecord
from .attempts import (
    CANCELLED,
    CHUNK,
    FAILED,
    RELEASED,
    RESCUED,
    RETRIED,
    AttemptQueries,
    LeaseMoved,
    LogEntry,
    class_path,
)
from .inserts import InsertQueries, NewTask
from .limits import LimitQueries
from .operations import OperationQueries
from .rows import parse_timestamp, placeholders, task_dict
from .schema import SchemaQueries
from .sql.statements import TASK_COLUMNS, rescued_error
from .sql.workflows import UNFINISHED
from .workflows import PreparedWorkflow, WorkflowQueries


def _record(row: Sequence[Any]) -> TaskRecord:
    """A row of `TASK_COLUMNS` (TaskRecord's fields, in their order, by definition), or of a
    lease's columns (the same without the last ones, which stay None)."""
    record = TaskRecord(*row)
    record.run_at = _lenient_timestamp(record.run_at)
    record.created_at = _lenient_timestamp(record.created_at)
    return record


def _lenient_timestamp(value: Any) -> dt.datetime | None:
    """`parse_timestamp`, or None for what SQLite holds in a row written by hand ('garbage', 42):
    such a row was leased already, and raising here would kill the worker that leased it."""
    try:
        return parse_timestamp(value)
    except (TypeError, ValueError, AttributeError):
        return None


FORCE_CANCEL = "cancelled (force)"


class TaskStore(SchemaQueries, InsertQueries, OperationQueries, WorkflowQueries, LimitQueries, AttemptQueries):
    """Queries on one task table through one peewee Database (thread-local connections): the
    engine's here (leasing, outcomes, rescue, reading), the schema's from `SchemaQueries`, the
    submit side's from `InsertQueries`, the operations side's from `OperationQueries`, results
    and groups from `WorkflowQueries`, global limits from `LimitQueries`, the attempt log from
    `AttemptQueries`, all on `StoreBase`. Every statement comes from
    `sql`/`sql.operations`/`sql.workflows`/`sql.limits`/`sql.attempts`, built once per (dialect, table).

    Every write that ends an attempt otherwise than in a plain success, and every operator
    action, logs its entry in its own transaction (`store.attempts`)."""

    # -- leasing -------------------------------------------------------------------------
    def lease(self, owner: str, queues: Sequence[str], limit: int, lease_timeout: float,
              keys: Sequence[str] | None = None) -> Leased:
        """Lease up to ``limit`` due tasks of ``queues``: status running, attempts + 1, lease set.

        ``keys``: only tasks with one of these keys (a worker passes the keys it has handlers
        for, so it never takes a task it cannot run); None: any key (operator tools, tests).
        While any global limit exists (`limits_exist`, looked up at most once a second), the
        lease obeys them (`lease_limited`); otherwise it is the one statement below. The
        answer's `Leased.sent` says from when the leases surely last ``lease_timeout``.
        """
        if keys is not None and not keys:
            return Leased([], time.monotonic())
        if self.limits_exist():
            sent, rows = self.lease_limited(owner, queues, limit, lease_timeout, keys)
            return Leased([_record(row) for row in rows], sent)
        sql, d = self.sql, self._d
        queue_marks = placeholders(len(queues))
        key_marks, keys = sql.known_keys(keys) if keys is not None else ("", ())
        lease_params = (owner, self._secs(lease_timeout))
        if self.dialect == "mysql":
            select_ids = d.fix(sql.due_ids.fill(queues=queue_marks, keys=key_marks))

            def lease_mysql() -> tuple[float, list[Any]]:
                ids = [row[0] for row in self._execute(select_ids, (*queues, *keys, limit)).fetchall()]
                sent = time.monotonic()
                if not ids:
                    return sent, []
                id_list = placeholders(len(ids))
                self._execute(d.fix(sql.lease_ids.fill(ids=id_list)), (*lease_params, *ids))
                return sent, list(self._execute(d.fix(sql.leased_rows.fill(ids=id_list)), ids).fetchall())
            sent, rows = in_transaction(self.db, lease_mysql)
        else:
            statement = sql.lease.fill(queues=queue_marks, keys=key_marks)
            params = (*lease_params, *queues, *keys, limit)

            def lease_one() -> tuple[float, list[Any]]:
                sent = self.sending()
                return sent, list(self._execute_hot(statement, params).fetchall())
            sent, rows = in_statement(self.db, lease_one)
        return Leased([_record(row) for row in rows], sent)

    def heartbeat(self, owner: str, ids: Sequence[int], lease_timeout: float) -> int:
        """Extend the leases of ``ids`` still held by ``owner``, in one statement; rows renewed."""
        if not ids:
            return 0
        statement = self._d.fix(self.sql.heartbeat.fill(ids=placeholders(len(ids))))
        return self._write(statement, (self._secs(lease_timeout), owner, *ids))

    def complete(self, owner: str, task_id: int, children: Sequence[NewTask] = (), delete: bool = False,
                 *, attempt: int | None = None, result: str | None = None, group_id: int | None = None,
                 workflows: Sequence[PreparedWorkflow] = ()) -> bool:
        """Mark succeeded (or delete the row) with its ``result`` (JSON text), insert its children
        and the groups or chains it created, and count it in its group, in one transaction.

        False when the lease was lost; then nothing is written, children included. Every
        outcome write is fenced on the lease: owner, status running and, when given, the
        ``attempt`` the lease counted (see `Statements` in sql.py).
        """
        params: tuple[Any, ...] = (task_id, owner, attempt)
        if delete:  # the row's attempt log goes with it
            statement = self.att.complete_and_delete
        elif result is not None:
            statement, params = self.wf.complete_with_result, (result, *params)
        else:
            statement = self.sql.complete

        def landed() -> bool:
            if delete and self.att.entries_of_fenced:  # SQLite: the entries first, while the fence holds
                self._execute(self.att.entries_of_fenced, (task_id, *params))
            return bool(self._execute(statement, params).rowcount >= 1)  # MySQL counts deleted entries too

        def write() -> bool:
            if not landed():
                return False
            if children:
                self.insert([dataclasses.replace(child, parent_id=task_id) for child in children])
            for workflow in workflows:
                self.insert_workflow(workflow.with_parent(task_id))
            if group_id is not None:
                self.count_final({group_id: 1})
            return True
        if not children and not workflows and group_id is None:
            return in_statement(self.db, landed)  # one statement, but on SQLite (in-process) with a delete
        return in_transaction(self.db, write)

    def complete_many(self, owner: str, ids: Sequence[int], attempts: Sequence[int] | None = None) -> set[int]:
        """Mark many of ``owner``'s tasks succeeded in one fenced statement; the ids accepted.

        An id missing from the answer had lost its lease (or, with ``attempts``, parallel to
        ``ids``, holds a newer lease than that attempt's): nothing was written for it.
        """
        if not ids:
            return set()
        if preparer := self._preparer:
            arrays = (list(ids), list(attempts) if attempts is not None else [None] * len(ids), owner)
            return in_statement(self.db, lambda: {row[0] for row in preparer.execute_prepared(
                self.sql.complete_many_arrays, arrays).fetchall()})
        marks = placeholders(len(ids))
        leases, pairs = "", []
        if attempts is not None:
            leases = self.sql.lease_pairs.fill(rows=self._d.row_list(len(ids)))
            pairs = [value for pair in zip(ids, attempts, strict=True) for value in pair]
        params = (owner, *ids, *pairs)
        if self.dialect == "mysql":  # no UPDATE … RETURNING (see `Statements.owned_ids`)
            select = self._d.fix(self.sql.owned_ids.fill(ids=marks, leases=leases))
            attempt_of = dict(zip(ids, attempts, strict=True)) if attempts is not None else None

            def write_mysql() -> set[int]:
                held = sorted(row[0] for row in self._execute(select, params).fetchall())
                if not held:
                    return set()
                # only the rows read as this lease's: an UPDATE keeps the lock of every row it
                # reads by id, matching or not, until its transaction ends
                held_marks, held_leases, held_pairs = placeholders(len(held)), "", []
                if attempt_of is not None:
                    held_leases = self.sql.lease_pairs.fill(rows=self._d.row_list(len(held)))
                    held_pairs = [value for task_id in held for value in (task_id, attempt_of[task_id])]
                update = self._d.fix(self.sql.complete_many.fill(ids=held_marks, leases=held_leases))
                if self._execute(update, (owner, *held, *held_pairs)).rowcount == len(held):
                    return set(held)
                # a lease was taken over between the read and the update: which rows did change
                read_back = self._d.fix(self.sql.succeeded_ids.fill(ids=held_marks))
                return {row[0] for row in self._execute(read_back, (owner, *held)).fetchall()}
            return in_transaction(self.db, write_mysql)
        update = self._d.fix(self.sql.complete_many_returning.fill(ids=marks, leases=leases))
        return in_statement(self.db, lambda: {row[0] for row in self._execute(update, params).fetchall()})

    def retry(self, owner: str, task_id: int, delay: float, error: str, *, attempt: int | None = None,
              entry: LogEntry | None = None) -> bool:
        """Back to pending, due after ``delay`` seconds, the attempt logged (``entry``: how it
        ended, by default a retry with ``error``); False when the lease was lost."""
        entry = entry or LogEntry(RETRIED, error=error, retry_delay=delay)
        return self.ended_write(self.sql.retry, (self._secs(delay), error, task_id, owner, attempt), task_id,
                                attempt, owner, entry)

    def fail(self, owner: str, task_id: int, error: str, *, attempt: int | None = None,
             group_id: int | None = None, entry: LogEntry | None = None) -> bool:
        """Mark failed for good, the attempt logged (``entry``, by default a failure with
        ``error``), and count it in its group (``group_id``) in the same transaction; False
        when the lease was lost."""
        entry = entry or LogEntry(FAILED, error=error)
        counted = None if group_id is None else lambda: self.count_final({group_id: 1})
        return self.ended_write(self.sql.fail, (error, task_id, owner, attempt), task_id, attempt, owner, entry,
                                then=counted)

    def release(self, owner: str, ids: Iterable[int] | None = None, reason: str | None = None) -> int:
        """Give leases back to pending without counting an attempt (all of owner's when ids is
        None), each logged as released (``reason``: why); how many."""
        if ids is not None:
            ids = list(ids)
            if not ids:
                return 0

        def write() -> int:
            if ids is None:
                held = [task.id for task in self.owned(owner)]  # a dead worker's: it takes no more
            else:
                held = ids
            # read plainly, not locked: a stale release (of leases taken over meanwhile) must not
            # lock the new holders' rows (`AttemptStatements.log_fenced`)
            mine = self.lock_rows(held, "lease_owner = ? AND status = 'running'", (owner,), lock=False)
            if not mine:
                return 0
            self.log_rows(mine, LogEntry(RELEASED, error=reason or "handed back unrun"))
            released = 0
            for start in range(0, len(mine), CHUNK):
                chunk = mine[start:start + CHUNK]
                statement = self._d.fix(self.sql.release_ids.fill(ids=placeholders(len(chunk))))
                released += int(self._execute(statement, (owner, *chunk)).rowcount)
            if released != len(mine):
                raise LeaseMoved(f"a lease of {owner} changed before its release")  # read and write again
            return released
        return int(self.unless_moved(write))

    def release_lease(self, owner: str, task_id: int, attempt: int, reason: str | None = None) -> bool:
        """Give one lease back to pending without counting its attempt, if it is still this
        lease (the attempt tells it from a newer lease of the same owner), logged as released
        (``reason``: why); whether it was."""
        return self.ended_write(self.sql.release_lease, (task_id, owner, attempt), task_id, attempt, owner,
                                LogEntry(RELEASED, error=reason or "handed back unrun"))

    def cancel(self, ids: Sequence[int], force: bool = False, by: str | None = None) -> dict[int, str]:
        """Cancel tasks: pending ones never run; running ones end ``cancelled`` at once, and
        their worker finds out on its next check (and, with ``force``, kills the handler).
        Each is logged as cancelled ``by`` whom (``cli:user@host``, ``dashboard``, ``api:…``).

        Returns the status each id had just before: ``pending``/``running``/``waiting`` (now
        cancelled, by this call), or its unchanged final status; ids that do not exist are left
        out. The rows are locked as they are read, so no worker's write comes between.
        """
        ids = list(ids)
        if not ids:
            return {}
        return in_transaction(self.db, lambda: self.cancel_in_transaction(ids, force, by))

    def cancel_in_transaction(self, ids: Sequence[int], force: bool = False,
                              by: str | None = None) -> dict[int, str]:
        """`cancel`'s statements, in the transaction already open on this store's connection."""
        if not ids:
            return {}
        marks = self._d.fix
        reason = FORCE_CANCEL if force else "cancelled"
        before = dict(self._execute(marks(self.sql.statuses_locked.fill(ids=placeholders(len(ids)))), ids).fetchall())
        members = self.lock_unfinished_members(ids)  # locked first: no final write races the count
        # the rows this cancel changes (locked as read): each gets its entry
        cancelled = sorted(task_id for task_id, status in before.items() if status in UNFINISHED)
        if cancelled:
            self.log_rows(cancelled, LogEntry(CANCELLED, error=reason, actor=by))
            id_marks = placeholders(len(cancelled))
            self._execute(marks(self.sql.cancel_pending.fill(ids=id_marks)), (reason, *cancelled))
            self._execute(marks(self.sql.cancel_running.fill(ids=id_marks)), (reason, *cancelled))
            self.cancel_waiting(cancelled, reason)
        if members:
            self.count_final(members)
        return before

    def cancelled_of(self, owner: str, ids: Sequence[int]) -> dict[int, bool]:
        """Which of ``owner``'s tasks were cancelled while leased: id → cancelled with force."""
        if not ids:
            return {}
        statement = self._d.fix(self.sql.cancelled_of_owner.fill(ids=placeholders(len(ids))))
        return {task_id: error == FORCE_CANCEL for task_id, error in self._execute(statement, (owner, *ids))}

    def owned(self, owner: str) -> list[TaskRecord]:
        """The tasks ``owner`` holds leases on."""
        return [_record(row) for row in self._execute(self.sql.owned, (owner,)).fetchall()]

    def rescue_expired(self, limit: int = 500,
                       delay_of: Callable[[TaskRecord, str], float | None] | None = None) -> list[TaskRecord]:
        """Take back up to ``limit`` expired leases, each counted as an attempt that failed with
        ``rescued_error``: pending again after ``delay_of(task, error)`` seconds, or failed when
        that is None. Without ``delay_of``: at once, failed when the attempts are used up.

        Each lease is taken back in a short transaction of its own (`rescue_one`), fenced on
        the lease read and on its still being expired, so a task whose worker renewed,
        finished or gave it back meanwhile is left alone. A row another transaction holds
        locked (a silent host's open transaction, until the server ends it) is skipped, not
        waited for, and so is one whose group row stays locked: one locked row never stalls
        the others, and the next round takes it. Returns the tasks taken back, as they are now.
        """
        expired = [_record(row) for row in self._execute(self.sql.expired_leases, (limit,)).fetchall()]
        if not expired:
            return []
        delay_of = delay_of or _retry_at_once
        rescued = []
        for task in expired:
            error = rescued_error(task.lease_owner)
            # the policy is asked before the transaction: a plugin's slowness never holds row locks
            delay = delay_of(task, error)
            try:
                landed = in_transaction(self.db, functools.partial(self.rescue_one, task, error, delay), attempts=2)
            except (peewee.OperationalError, peewee.InternalError) as exc:
                if not is_retryable(exc):
                    raise
                continue  # its group row stayed locked past the lock wait: the next round
            if landed:
                rescued.append(dataclasses.replace(task, status="failed" if delay is None else "pending",
                                                   lease_owner=None, last_error=error))
        return rescued

    def rescue_one(self, task: TaskRecord, error: str, delay: float | None) -> bool:
        """Take back one expired lease of ``task`` as read, in the transaction open on this
        store's connection: pending after ``delay`` seconds, or failed (counted in its group)
        when ``delay`` is None, the attempt logged as rescued. False, writing nothing, when the
        lease is no longer that expired one or its row is locked by another transaction."""
        sql, fence = self.sql, (task.id, task.lease_owner, task.attempts)
        if self._execute(sql.rescue_lock, fence).fetchone() is None:
            return False
        if delay is None:
            self._execute(sql.rescue_fail, (error, *fence))
            if task.group_id is not None:
                self.count_final({task.group_id: 1})
        else:
            self._execute(sql.rescue_retry, (self._secs(delay), error, *fence))
        self.log_ended(task.id, task.attempts, task.lease_owner,
                       LogEntry(RESCUED, class_path(LeaseExpired), error, retry_delay=delay))
        return True

    # -- reading -------------------------------------------------------------------------
    def get(self, task_id: int) -> dict[str, Any] | None:
        """Every column of one task (timestamps aware UTC), or None when no row has that id."""
        with self._table_required():
            row = self._execute(self.sql.get, (task_id,)).fetchone()
        return None if row is None else task_dict(row)

    def counts(self) -> dict[tuple[str, str], int]:
        """Rows by (queue, status)."""
        return {(queue, status): count for queue, status, count in self._execute(self.sql.count_by_status)}

    def pending_by_key(self, overdue_after: float) -> list[PendingGroup]:
        """The pending rows by queue and task key (see `PendingGroup`). Reads pending rows only."""
        rows = self._execute(self.sql.pending_by_key, (self._secs(-overdue_after),)).fetchall()
        return [PendingGroup(queue, key, int(count), parse_timestamp(oldest), int(overdue or 0), int(due or 0),
                             parse_timestamp(now))
                for queue, key, count, oldest, overdue, due, now in rows]

    def pending_summary(self, overdue_after: float) -> list[tuple[str, int, dt.datetime | None, int,
                                                                  dt.datetime | None]]:
        """Per queue with pending rows: (queue, pending, oldest due run_at, due for longer than
        ``overdue_after`` seconds, the database's now). Reads pending rows only."""
        return summarize_by_queue(self.pending_by_key(overdue_after))

    def running_summary(self, stuck_after: float) -> list[tuple[str, int, int]]:
        """Per queue with running rows: (queue, running, started more than ``stuck_after`` seconds
        ago). Reads running rows only."""
        rows = self._execute(self.sql.running_summary, (self._secs(-stuck_after),)).fetchall()
        return [(queue, int(count), int(stuck or 0)) for queue, count, stuck in rows]

    def waiting_summary(self) -> dict[str, int]:
        """Per queue with waiting rows (group callbacks, chain steps): how many. Reads those rows only."""
        return {queue: int(count) for queue, count in self._execute(self.sql.waiting_summary).fetchall()}

    def statuses(self, ids: Sequence[int]) -> dict[int, str]:
        if not ids:
            return {}
        statement = self._d.fix(self.sql.statuses.fill(ids=placeholders(len(ids))))
        return dict(self._execute(statement, ids).fetchall())


@dataclasses.dataclass(frozen=True)
class PendingGroup:
    """The pending tasks of one task key in one queue: how many, the oldest due one's ``run_at``
    (None: none is due yet), how many have been due longer than a threshold, how many are due,
    and the database's clock when it counted."""

    queue: str
    key: str
    pending: int
    oldest_due: dt.datetime | None
    overdue: int
    due: int
    now: dt.datetime | None


def summarize_by_queue(groups: Iterable[PendingGroup]) -> list[tuple[str, int, dt.datetime | None, int,
                                                                      dt.datetime | None]]:
    """`TaskStore.pending_summary`'s rows from `TaskStore.pending_by_key`'s groups, by queue."""
    by_queue: dict[str, list[PendingGroup]] = {}
    for group in groups:
        by_queue.setdefault(group.queue, []).append(group)
    return [(queue, sum(group.pending for group in members),
             min((group.oldest_due for group in members if group.oldest_due is not None), default=None),
             sum(group.overdue for group in members), members[0].now)
            for queue, members in sorted(by_queue.items())]


class Leased(list[TaskRecord]):
    """The tasks a lease took, in the lease order (priority desc, run_at, id), and `sent`:
    the moment (monotonic) the statement that set their leases was sent, in the attempt that
    succeeded. The database set each lease to its own clock's now + lease_timeout when that
    statement ran, later than `sent`, so each surely lasts until ``sent + lease_timeout``;
    the time spent reconnecting or retrying before that attempt is not counted against it
    (it made fresh leases look lapsed after a network outage, and they were given back unrun)."""

    def __init__(self, tasks: Iterable[TaskRecord], sent: float) -> None:
        super().__init__(sorted(tasks, key=lambda t: (
            -t.priority, t.run_at or dt.datetime.min.replace(tzinfo=dt.timezone.utc), t.id)))
        self.sent = sent


def _retry_at_once(task: TaskRecord, _error: str) -> float | None:
    """Rescue's default policy: no backoff; failed once the attempts are used up."""
    return 0.0 if task.attempts < task.max_attempts else None


__all__ = ["Leased", "PendingGroup", "TaskStore", "TASK_COLUMNS", "parse_timestamp", "summarize_by_queue"]
