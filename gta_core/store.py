"""The data-access layer: one named method per query. Workers and supervisors never build SQL.

Every write to a leased row is fenced by ``lease_owner`` and ``status = 'running'``; a fenced
write that touches no row means the lease was lost, and the caller is told so (never
overwrites). Writes run in short transactions (``BEGIN IMMEDIATE`` on SQLite) retried on
deadlock and lock-wait errors by `database.in_transaction`.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import peewee

from .database import dialect_of, in_transaction, install_sqlite_functions
from .errors import SchemaError
from .sql import ALL_COLUMNS, SCHEMA_VERSION, TASK_COLUMNS, statements
from .tasks import TaskRecord

log = logging.getLogger("gta.store")


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


def parse_timestamp(value: Any) -> dt.datetime | None:
    """Database timestamps as timezone-aware UTC datetimes."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value


def _record(row: Sequence[Any]) -> TaskRecord:
    """A row of `TASK_COLUMNS` (the same order as TaskRecord's fields)."""
    record = TaskRecord(*row)
    record.run_at = parse_timestamp(record.run_at)
    return record


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

    def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        return in_transaction(self.db, lambda: self._execute(sql, params).rowcount)

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
            elif before > SCHEMA_VERSION:
                raise SchemaError(f"task table {self.table!r} is at version {before}, newer than this "
                                  f"GTA ({SCHEMA_VERSION}): upgrade GTA")
            return before, SCHEMA_VERSION

        if self.dialect == "mysql":  # DDL is not transactional there: use a named lock instead
            self._execute("SELECT GET_LOCK(%s, 60)", (f"gta_migrate_{self.table}",))
            try:
                return upgrade()
            finally:
                self._execute("SELECT RELEASE_LOCK(%s)", (f"gta_migrate_{self.table}",))
        return in_transaction(self.db, upgrade)

    def drop(self) -> None:
        """Drop the task table and its schema table (tests and `gta purge --all` only)."""
        self._execute(f"DROP TABLE IF EXISTS {self.table}")
        self._execute(f"DROP TABLE IF EXISTS {self.table}_schema")

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
                return list(self._execute(d.fix(f"SELECT {sql.task_columns} FROM {self.table} "
                                                f"WHERE id IN ({id_list})"), ids).fetchall())
            rows = in_transaction(self.db, lease_mysql)
        else:
            lock = " FOR UPDATE SKIP LOCKED" if self.dialect == "postgres" else ""
            statement = d.fix(f"UPDATE {self.table} SET {sql.lease_set} WHERE id IN "
                              f"(SELECT id FROM {self.table} WHERE {due} {sql.lease_order} LIMIT ?{lock}) "
                              f"RETURNING {sql.task_columns}")
            rows = in_transaction(self.db, lambda: list(
                self._execute(statement, (*lease_params, *queues, limit)).fetchall()))
        tasks = [_record(row) for row in rows]
        tasks.sort(key=lambda t: (-t.priority, t.run_at or dt.datetime.min.replace(tzinfo=dt.timezone.utc), t.id))
        return tasks

    def heartbeat(self, owner: str, ids: Sequence[int], lease_timeout: float) -> int:
        """Extend the leases of ``ids`` still held by ``owner``, in one statement; rows renewed."""
        if not ids:
            return 0
        statement = self._d.fix(self.sql.heartbeat.format(ids=_placeholders(len(ids))))
        return self._write(statement, (self._secs(lease_timeout), owner, *ids))

    def complete(self, owner: str, task_id: int) -> bool:
        """Mark succeeded; False when the lease was lost."""
        return self._write(self.sql.complete, (task_id, owner)) == 1

    def retry(self, owner: str, task_id: int, delay: float, error: str) -> bool:
        """Back to pending, due after ``delay`` seconds; False when the lease was lost."""
        return self._write(self.sql.retry, (self._secs(delay), error, task_id, owner)) == 1

    def fail(self, owner: str, task_id: int, error: str) -> bool:
        """Mark failed for good; False when the lease was lost."""
        return self._write(self.sql.fail, (error, task_id, owner)) == 1

    def release(self, owner: str, ids: Iterable[int] | None = None) -> int:
        """Give leases back to pending without counting an attempt (all of owner's when ids is None)."""
        if ids is None:
            return self._write(self.sql.release_owner, (owner,))
        ids = list(ids)
        if not ids:
            return 0
        statement = self._d.fix(self.sql.release_ids.format(ids=_placeholders(len(ids))))
        return self._write(statement, (owner, *ids))

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
        task = dict(zip(ALL_COLUMNS, row))
        for column in ("run_at", "lease_expires_at", "created_at", "updated_at", "started_at", "finished_at"):
            task[column] = parse_timestamp(task[column])
        return task

    def counts(self) -> dict[tuple[str, str], int]:
        """Rows by (queue, status)."""
        return {(queue, status): count for queue, status, count in self._execute(self.sql.count_by_status)}

    def statuses(self, ids: Sequence[int]) -> dict[int, str]:
        if not ids:
            return {}
        statement = self._d.fix(f"SELECT id, status FROM {self.table} WHERE id IN ({_placeholders(len(ids))})")
        return dict(self._execute(statement, ids).fetchall())


__all__ = ["TaskStore", "TASK_COLUMNS", "parse_timestamp"]
