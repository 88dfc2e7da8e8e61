"""The data-access layer: one named method per query. Workers and supervisors never build SQL.

Every write to a leased row is fenced by ``lease_owner`` and ``status = 'running'``; a fenced
write that touches no row means the lease was lost, and the caller is told so (never
overwrites). Writes run in short transactions (``BEGIN IMMEDIATE`` on SQLite) retried on
deadlock and lock-wait errors by `database.in_transaction`.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import peewee

from .database import PostgresDatabase, dialect_of, in_statement, in_transaction, install_sqlite_functions, utc_text
from .errors import SchemaError
from .sql import (
    ALL_COLUMNS,
    FINAL_STATUSES,
    RESCUED_ERROR_PREFIX,
    SCHEMA_VERSION,
    TASK_COLUMNS,
    OperationStatements,
    numbered,
    operation_statements,
    statements,
)
from .tasks import TaskRecord

log = logging.getLogger("gta.store")


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


def parse_timestamp(value: Any) -> dt.datetime | None:
    """Database timestamps as timezone-aware UTC datetimes."""
    if value is None:
        return None
    moment: dt.datetime = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.timezone.utc)


def _record(row: Sequence[Any]) -> TaskRecord:
    """A row of `TASK_COLUMNS` (the order of TaskRecord's fields), or of a lease's columns
    (the same without the last ones, which stay None)."""
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


@dataclasses.dataclass(frozen=True)
class NewTask:
    """A validated row to insert (see `gta_core.submit`). ``run_at`` wins over ``delay``."""

    key: str
    queue: str
    priority: int
    args: str
    context: str | None
    max_attempts: int
    delay: float = 0.0
    run_at: dt.datetime | None = None  # aware UTC
    dedupe_key: str | None = None
    order_key: str | None = None
    parent_id: int | None = None


class TaskStore:
    """Queries on one task table through one peewee Database (thread-local connections)."""

    def __init__(self, db: peewee.Database, table: str) -> None:
        self.db = db
        self.table = table
        self.dialect = dialect_of(db)
        self.sql = statements(self.dialect, table)
        self._d = self.sql.dialect
        install_sqlite_functions(db)

    # -- helpers -------------------------------------------------------------------------
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.db.execute_sql(sql, tuple(params))

    def _execute_hot(self, sql: str, params: Sequence[Any]) -> Any:
        """`_execute` for a statement (``?`` placeholders) on the hot path: prepared where the
        database can (PostgreSQL through psycopg2), as parsing and planning a lease of 25 rows
        cost as much as running it."""
        if preparer := self._preparer:
            return preparer.execute_prepared(numbered(sql), params)
        return self._execute(self._d.fix(sql), params)

    def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        return int(in_statement(self.db, lambda: self._execute(sql, params).rowcount))

    def _secs(self, seconds: float) -> float | int:
        return self._d.seconds_param(seconds)

    # -- schema --------------------------------------------------------------------------
    def schema_version(self) -> int | None:
        """The installed schema version, or None when the table does not exist."""
        if not self.db.table_exists(f"{self.table}_schema"):
            return None
        row = self._execute(self.sql.schema_version).fetchone()
        return row[0] if row else None

    def require_schema(self) -> None:
        version = self.schema_version()
        if version != SCHEMA_VERSION:
            found = "missing" if version is None else f"at version {version}"
            raise SchemaError(f"task table {self.table!r} is {found}, this GTA needs version "
                              f"{SCHEMA_VERSION}: run `gta migrate`")
        if not self.db.table_exists(self.sql.queues_table):  # leasing reads it
            raise SchemaError(f"task table {self.table!r} has no queue controls table "
                              f"{self.sql.queues_table!r} yet: run `gta migrate`")

    def migrate(self) -> tuple[int | None, int]:
        """Create or upgrade the table; returns (version before, version after). Idempotent."""
        def upgrade() -> tuple[int | None, int]:
            if self.dialect == "postgres":  # serialize concurrent migrations
                self._execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.table,))
            before = self.schema_version()
            if before is None:
                for statement in self.sql.create:
                    self._execute(statement)
                self._execute(self.sql.set_schema_version, (SCHEMA_VERSION,))
            elif before < SCHEMA_VERSION:
                upgrades = self._d.upgrades(self.table)
                for version in range(before + 1, SCHEMA_VERSION + 1):
                    for statement in upgrades.get(version, []):
                        self._execute(statement)
                    self._execute(self.sql.set_schema_version, (version,))
            elif before > SCHEMA_VERSION:
                raise SchemaError(f"task table {self.table!r} is at version {before}, newer than this "
                                  f"GTA ({SCHEMA_VERSION}): upgrade GTA")
            if not self.db.table_exists(self.sql.queues_table):  # added at version 2, without a bump
                self._execute(self.sql.create_queues)
            return before, SCHEMA_VERSION

        if self.dialect == "mysql":  # DDL is not transactional there: use a named lock instead
            self._execute("SELECT GET_LOCK(%s, 60)", (f"gta_migrate_{self.table}",))
            try:
                return upgrade()
            finally:
                self._execute("SELECT RELEASE_LOCK(%s)", (f"gta_migrate_{self.table}",))
        return in_transaction(self.db, upgrade)

    def drop(self) -> None:
        """Drop the task table, its schema and queues tables (tests and `gta purge --all` only)."""
        self._execute(f"DROP TABLE IF EXISTS {self.table}")
        self._execute(f"DROP TABLE IF EXISTS {self.table}_schema")
        self._execute(f"DROP TABLE IF EXISTS {self.sql.queues_table}")

    # -- submitting ----------------------------------------------------------------------
    def insert(self, tasks: Sequence[NewTask]) -> list[int]:
        """Insert tasks with this store's connection and current transaction; their ids, in order.

        Rows without a dedupe key go in multi-row statements. A row with one is inserted
        unless a row with that key is kept, in which case the kept row's id is returned and
        nothing is written (the unique index decides, so racing submitters agree). On
        PostgreSQL a ``NOTIFY`` per queue rides in the same transaction.
        """
        ids: list[int | None] = [None] * len(tasks)
        plain = [index for index, task in enumerate(tasks) if task.dedupe_key is None]
        for start in range(0, len(plain), self._d.insert_chunk):
            chunk = plain[start:start + self._d.insert_chunk]
            for index, task_id in zip(chunk, self._insert_rows([tasks[i] for i in chunk]), strict=True):
                ids[index] = task_id
        for index, task in enumerate(tasks):
            if task.dedupe_key is not None:
                ids[index] = self._insert_deduplicated(task)
        return [task_id for task_id in ids if task_id is not None]

    @property
    def _preparer(self) -> PostgresDatabase | None:
        """The database, where the hot statements run prepared: PostgreSQL through psycopg2."""
        return self.db if isinstance(self.db, PostgresDatabase) and self.db.prepares else None

    @property
    def _returning(self) -> str:
        """``RETURNING id``; on PostgreSQL with the ``NOTIFY`` of each inserted row's queue, so a
        submit costs no round trip of its own for the wake-up (the server drops duplicate
        notifications within a transaction, and delivers none if it rolls back)."""
        if self.dialect == "postgres":
            return f" RETURNING id, pg_notify('gta_{self.table}', queue)"
        return " RETURNING id"

    def _values(self, tasks: Sequence[NewTask]) -> tuple[str, list[Any]]:
        values, params = [], []
        for task in tasks:
            if task.run_at is not None:
                values.append(self.sql.insert_row_at)
                moment = task.run_at.astimezone(dt.timezone.utc).replace(tzinfo=None)
                when: Any = utc_text(moment) if self.dialect == "sqlite" else moment
            else:
                values.append(self.sql.insert_row_delay)
                when = self._secs(task.delay)
            params += [task.key, task.queue, task.priority, task.args, task.context, when, task.max_attempts,
                       task.dedupe_key, task.order_key, task.parent_id]
        return self.sql.insert_prefix + ", ".join(values), params

    @staticmethod
    def _bulk_row(task: NewTask) -> tuple[Any, ...]:
        """A task's values of `BULK_COLUMNS` (PostgreSQL)."""
        run_at = task.run_at and task.run_at.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return (task.key, task.queue, task.priority, task.args, task.context, run_at, task.delay,
                task.max_attempts, task.dedupe_key, task.order_key, task.parent_id)

    def _bulk(self, tasks: Sequence[NewTask]) -> tuple[str, list[Any]]:
        """`Statements.bulk_insert` and its parameters for these rows (PostgreSQL)."""
        columns = list(zip(*map(self._bulk_row, tasks), strict=True))
        varying = tuple(len(set(column)) > 1 for column in columns)
        params: list[Any] = [column[0] for column, varies in zip(columns, varying, strict=True) if not varies]
        arrays: list[Any] = [list(column) for column, varies in zip(columns, varying, strict=True) if varies]
        return self.sql.bulk_insert(varying), params + (arrays or [len(tasks)])

    def _insert_rows(self, tasks: Sequence[NewTask]) -> list[int]:
        if self.dialect == "postgres" and len(tasks) > 1:
            statement, params = self._bulk(tasks)
            return sorted(row[0] for row in self._execute(statement + self._returning, params).fetchall())
        if preparer := self._preparer:
            cursor = preparer.execute_prepared(self.sql.insert_one + self._returning, self._bulk_row(tasks[0]))
            return [cursor.fetchone()[0]]
        statement, params = self._values(tasks)
        if self._d.insert_returns_ids or self._is_mariadb():
            cursor = self._execute(self._d.fix(statement + self._returning), params)
            return sorted(row[0] for row in cursor.fetchall())
        cursor = self._execute(self._d.fix(statement), params)
        return list(range(cursor.lastrowid, cursor.lastrowid + len(tasks)))  # consecutive in one statement

    def _insert_deduplicated(self, task: NewTask) -> int:
        statement, params = self._values([task])
        if self.dialect == "mysql":
            self._execute(self._d.fix(f"{statement} {self.sql.insert_or_skip}"), params)
        else:  # the new row's id comes back at once; a kept row's is read below
            inserted = self._execute(self._d.fix(f"{statement} {self.sql.insert_or_skip}{self._returning}"),
                                     params).fetchone()
            if inserted:
                return int(inserted[0])
        row = self._execute(self.sql.id_by_dedupe_key, (task.dedupe_key,)).fetchone()
        return int(row[0])

    def _is_mariadb(self) -> bool:
        """MariaDB (10.5+) has ``INSERT … RETURNING``; MySQL 8 does not."""
        conn = self.db.connection()
        return "mariadb" in str(getattr(conn, "get_server_info", lambda: "")()).lower()

    # -- leasing -------------------------------------------------------------------------
    def lease(self, owner: str, queues: Sequence[str], limit: int, lease_timeout: float) -> list[TaskRecord]:
        """Lease up to ``limit`` due tasks of ``queues``: status running, attempts + 1, lease set."""
        sql, d = self.sql, self._d
        due = sql.due.format(queues=_placeholders(len(queues)))
        lease_params = (owner, self._secs(lease_timeout))
        if self.dialect == "mysql":
            select_ids = d.fix(f"SELECT id FROM {self.table} WHERE {due} {sql.lease_order} "
                               "LIMIT ? FOR UPDATE SKIP LOCKED")

            def lease_mysql() -> list[Any]:
                ids = [row[0] for row in self._execute(select_ids, (*queues, limit)).fetchall()]
                if not ids:
                    return []
                id_list = _placeholders(len(ids))
                self._execute(d.fix(f"UPDATE {self.table} SET {sql.lease_set} WHERE id IN ({id_list})"),
                              (*lease_params, *ids))
                return list(self._execute(d.fix(f"SELECT {sql.lease_columns} FROM {self.table} "
                                                f"WHERE id IN ({id_list})"), ids).fetchall())
            rows = in_transaction(self.db, lease_mysql)
        else:
            lock = " FOR UPDATE SKIP LOCKED" if self.dialect == "postgres" else ""
            statement = (f"UPDATE {self.table} SET {sql.lease_set} WHERE id IN "
                         f"(SELECT id FROM {self.table} WHERE {due} {sql.lease_order} LIMIT ?{lock}) "
                         f"RETURNING {sql.lease_columns}")
            params = (*lease_params, *queues, limit)
            rows = in_statement(self.db, lambda: list(self._execute_hot(statement, params).fetchall()))
        tasks = [_record(row) for row in rows]
        tasks.sort(key=lambda t: (-t.priority, t.run_at or dt.datetime.min.replace(tzinfo=dt.timezone.utc), t.id))
        return tasks

    def heartbeat(self, owner: str, ids: Sequence[int], lease_timeout: float) -> int:
        """Extend the leases of ``ids`` still held by ``owner``, in one statement; rows renewed."""
        if not ids:
            return 0
        statement = self._d.fix(self.sql.heartbeat.format(ids=_placeholders(len(ids))))
        return self._write(statement, (self._secs(lease_timeout), owner, *ids))

    def complete(self, owner: str, task_id: int, children: Sequence[NewTask] = (), delete: bool = False,
                 *, attempt: int | None = None) -> bool:
        """Mark succeeded (or delete the row), and insert its children, in one transaction.

        False when the lease was lost; then nothing is written, children included. Every
        outcome write is fenced on the lease: owner, status running and, when given, the
        ``attempt`` the lease counted (see `Statements` in sql.py).
        """
        statement = self.sql.complete_and_delete if delete else self.sql.complete
        params = (task_id, owner, attempt)

        def write() -> bool:
            if self._execute(statement, params).rowcount != 1:
                return False
            if children:
                self.insert([dataclasses.replace(child, parent_id=task_id) for child in children])
            return True
        if not children:
            return self._write(statement, params) == 1
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
        marks = _placeholders(len(ids))
        leases, pairs = "", []
        if attempts is not None:
            leases = self.sql.lease_pairs.format(rows=self._d.row_list(len(ids)))
            pairs = [value for pair in zip(ids, attempts, strict=True) for value in pair]
        params = (owner, *ids, *pairs)
        if self.dialect == "mysql":  # no UPDATE … RETURNING: lock the fenced rows, then update them
            select = self._d.fix(self.sql.lock_owned_ids.format(ids=marks, leases=leases))

            def write_mysql() -> set[int]:
                held = {row[0] for row in self._execute(select, params).fetchall()}
                if held:
                    self._execute(self._d.fix(self.sql.complete_many.format(ids=_placeholders(len(held)), leases="")),
                                  (owner, *held))
                return held
            return in_transaction(self.db, write_mysql)
        update = self._d.fix(self.sql.complete_many.format(ids=marks, leases=leases))
        return in_statement(self.db, lambda: {row[0] for row in self._execute(
            f"{update} RETURNING id", params).fetchall()})

    def retry(self, owner: str, task_id: int, delay: float, error: str, *, attempt: int | None = None) -> bool:
        """Back to pending, due after ``delay`` seconds; False when the lease was lost."""
        return self._write(self.sql.retry, (self._secs(delay), error, task_id, owner, attempt)) == 1

    def fail(self, owner: str, task_id: int, error: str, *, attempt: int | None = None) -> bool:
        """Mark failed for good; False when the lease was lost."""
        return self._write(self.sql.fail, (error, task_id, owner, attempt)) == 1

    def release(self, owner: str, ids: Iterable[int] | None = None) -> int:
        """Give leases back to pending without counting an attempt (all of owner's when ids is None)."""
        if ids is None:
            return self._write(self.sql.release_owner, (owner,))
        ids = list(ids)
        if not ids:
            return 0
        statement = self._d.fix(self.sql.release_ids.format(ids=_placeholders(len(ids))))
        return self._write(statement, (owner, *ids))

    def release_lease(self, owner: str, task_id: int, attempt: int) -> bool:
        """Give one lease back to pending without counting its attempt, if it is still this
        lease (the attempt tells it from a newer lease of the same owner); whether it was."""
        return self._write(self.sql.release_lease, (task_id, owner, attempt)) == 1

    def cancel(self, ids: Sequence[int], force: bool = False) -> dict[int, str]:
        """Cancel tasks: pending ones never run; running ones end ``cancelled`` at once, and
        their worker finds out on its next check (and, with ``force``, kills the handler).

        Returns the status each id had: ``pending``/``running`` (now cancelled), or its
        unchanged final status; ids that do not exist are left out.
        """
        ids = list(ids)
        if not ids:
            return {}
        marks = self._d.fix
        reason = FORCE_CANCEL if force else "cancelled"

        def write() -> dict[int, str]:
            before = self.statuses(ids)
            placeholders = _placeholders(len(ids))
            self._execute(marks(self.sql.cancel_pending.format(ids=placeholders)), (reason, *ids))
            self._execute(marks(self.sql.cancel_running.format(ids=placeholders)), (reason, *ids))
            return before
        return in_transaction(self.db, write)

    def cancelled_of(self, owner: str, ids: Sequence[int]) -> dict[int, bool]:
        """Which of ``owner``'s tasks were cancelled while leased: id → cancelled with force."""
        if not ids:
            return {}
        statement = self._d.fix(self.sql.cancelled_of_owner.format(ids=_placeholders(len(ids))))
        return {task_id: error == FORCE_CANCEL for task_id, error in self._execute(statement, (owner, *ids))}

    def owned(self, owner: str) -> list[TaskRecord]:
        """The tasks ``owner`` holds leases on."""
        return [_record(row) for row in self._execute(self.sql.owned, (owner,)).fetchall()]

    def rescue_expired(self, limit: int = 500) -> list[TaskRecord]:
        """Take back leases that expired: pending again (attempt counted) or failed when exhausted.

        Conditional and batched: a task completed between our read and our write is left alone.
        """
        sql, d, t = self.sql, self._d, self.table
        if self.dialect == "mysql":
            select_ids = d.fix(f"SELECT id FROM {t} WHERE {sql.expired} ORDER BY lease_expires_at "
                               "LIMIT ? FOR UPDATE SKIP LOCKED")

            def rescue_mysql() -> list[Any]:
                ids = [row[0] for row in self._execute(select_ids, (limit,)).fetchall()]
                if not ids:
                    return []
                id_list = _placeholders(len(ids))
                self._execute(d.fix(f"UPDATE {t} SET {sql.rescue_set} WHERE id IN ({id_list}) AND {sql.expired}"),
                              ids)
                return list(self._execute(d.fix(f"SELECT {sql.task_columns} FROM {t} WHERE id IN ({id_list})"),
                                          ids).fetchall())
            rows = in_transaction(self.db, rescue_mysql)
        else:
            lock = " FOR UPDATE SKIP LOCKED" if self.dialect == "postgres" else ""
            statement = d.fix(f"UPDATE {t} SET {sql.rescue_set} WHERE id IN (SELECT id FROM {t} WHERE "
                              f"{sql.expired} ORDER BY lease_expires_at LIMIT ?{lock}) AND {sql.expired} "
                              f"RETURNING {sql.task_columns}")
            rows = in_transaction(self.db, lambda: list(self._execute(statement, (limit,)).fetchall()))
        return [_record(row) for row in rows]

    # -- reading -------------------------------------------------------------------------
    def get(self, task_id: int) -> dict[str, Any] | None:
        row = self._execute(self.sql.get, (task_id,)).fetchone()
        if row is None:
            return None
        task = dict(zip(ALL_COLUMNS, row, strict=True))
        for column in ("run_at", "lease_expires_at", "created_at", "updated_at", "started_at", "finished_at"):
            task[column] = parse_timestamp(task[column])
        return task

    def counts(self) -> dict[tuple[str, str], int]:
        """Rows by (queue, status)."""
        return {(queue, status): count for queue, status, count in self._execute(self.sql.count_by_status)}

    def pending_summary(self, overdue_after: float) -> list[tuple[str, int, dt.datetime | None, int,
                                                                  dt.datetime | None]]:
        """Per queue with pending rows: (queue, pending, oldest due run_at, due for longer than
        ``overdue_after`` seconds, the database's now). Reads pending rows only."""
        rows = self._execute(self.sql.pending_summary, (self._secs(-overdue_after),)).fetchall()
        return [(queue, int(count), parse_timestamp(oldest), int(overdue or 0), parse_timestamp(now))
                for queue, count, oldest, overdue, now in rows]

    def running_summary(self, stuck_after: float) -> list[tuple[str, int, int]]:
        """Per queue with running rows: (queue, running, started more than ``stuck_after`` seconds
        ago). Reads running rows only."""
        rows = self._execute(self.sql.running_summary, (self._secs(-stuck_after),)).fetchall()
        return [(queue, int(count), int(stuck or 0)) for queue, count, stuck in rows]

    def statuses(self, ids: Sequence[int]) -> dict[int, str]:
        if not ids:
            return {}
        statement = self._d.fix(f"SELECT id, status FROM {self.table} WHERE id IN ({_placeholders(len(ids))})")
        return dict(self._execute(statement, ids).fetchall())

    # -- operations: the monitor, cleanup and the admin CLI ------------------------------------
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
        statement = self._d.fix(self.ops.latest_start.format(keys=_placeholders(len(dedupe_keys))))
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
        marks, age = _placeholders(len(statuses)), self._secs(-older_than)
        select = self._d.fix(self.ops.finished_ids.format(statuses=marks))

        def batch() -> int:
            ids = [row[0] for row in self._execute(select, (age, *statuses, limit)).fetchall()]
            if not ids:
                return 0
            delete = self._d.fix(self.ops.delete_finished.format(ids=_placeholders(len(ids)), statuses=marks))
            return int(self._execute(delete, (*ids, *statuses, age)).rowcount)
        return int(in_transaction(self.db, batch))

    def list_tasks(self, status: str | None = None, queue: str | None = None, key: str | None = None,
                   limit: int = 50) -> list[dict[str, Any]]:
        """The newest ``limit`` tasks matching every filter given, newest first."""
        filters = [(column, value) for column, value in (("status", status), ("queue", queue),
                                                          (self._d.q("key"), key)) if value is not None]
        where = (" WHERE " + " AND ".join(f"{column} = ?" for column, _ in filters)) if filters else ""
        statement = self._d.fix(self.ops.list.format(where=where))
        return self._tasks(statement, (*(value for _, value in filters), limit))

    def succeeded_per_queue(self, seconds: float) -> dict[str, int]:
        """Tasks that succeeded in the last ``seconds`` (database clock), by queue."""
        rows = self._execute(self.ops.succeeded_per_queue, (self._secs(-seconds),)).fetchall()
        return {queue: int(count) for queue, count in rows}

    def ids_with_status(self, status: str, after_id: int, limit: int) -> list[int]:
        """Up to ``limit`` ids of tasks with ``status`` above ``after_id``, ascending (a cursor)."""
        return [row[0] for row in self._execute(self.ops.ids_with_status, (status, after_id, limit)).fetchall()]

    def rerun(self, ids: Sequence[int]) -> dict[int, str]:
        """GTA's ForceRerunTasks: failed or cancelled tasks back to pending, due now, attempts
        reset (the previous error is kept in last_error). Other tasks are left alone.

        Returns the status each id had before (ids that do not exist are left out). On
        PostgreSQL the workers are notified in the same transaction.
        """
        ids = list(ids)
        if not ids:
            return {}
        marks = _placeholders(len(ids))

        def write() -> dict[int, str]:
            before = self.statuses(ids)
            if self._execute(self._d.fix(self.ops.rerun.format(ids=marks)), ids).rowcount and \
                    self.dialect == "postgres":
                queues = self._execute(self._d.fix(self.ops.queues_of.format(ids=marks)), ids).fetchall()
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


def task_dict(row: Sequence[Any]) -> dict[str, Any]:
    """A row of `ALL_COLUMNS` as a dict, timestamps as aware UTC datetimes (what `TaskStore.get` returns)."""
    task = dict(zip(ALL_COLUMNS, row, strict=True))
    for column in ("run_at", "lease_expires_at", "created_at", "updated_at", "started_at", "finished_at"):
        task[column] = parse_timestamp(task[column])
    return task


__all__ = ["TaskStore", "TASK_COLUMNS", "parse_timestamp"]
