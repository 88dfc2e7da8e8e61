"""Inserting tasks (the submit side's queries), mixed into `TaskStore`.

Multi-row inserts in chunks (`Dialect.insert_chunk`), PostgreSQL's constant-time bulk insert
and prepared one-row insert, and the dedupe insert that returns the kept row's id.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

import peewee

from .database import PostgresDatabase, utc_text
from .dialects import Dialect
from .sql import Statements


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


class InsertQueries:
    """What submit asks of the task table; `TaskStore` provides the connection."""

    db: peewee.Database
    dialect: str
    sql: Statements
    _d: Dialect
    _execute: Callable[..., Any]
    _secs: Callable[[float], float | int]
    _table_required: Callable[[], contextlib.AbstractContextManager[None]]

    @property
    def _preparer(self) -> PostgresDatabase | None:
        """The database, where the hot statements run prepared: PostgreSQL through psycopg2."""
        return self.db if isinstance(self.db, PostgresDatabase) and self.db.prepares else None

    def insert(self, tasks: Sequence[NewTask]) -> list[int]:
        """Insert tasks with this store's connection and current transaction; their ids, in order.

        Rows without a dedupe key go in multi-row statements. A row with one is inserted
        unless a row with that key is kept, in which case the kept row's id is returned and
        nothing is written (the unique index decides, so racing submitters agree). On
        PostgreSQL a ``NOTIFY`` per queue rides in the same transaction.
        """
        ids: list[int | None] = [None] * len(tasks)
        plain = [index for index, task in enumerate(tasks) if task.dedupe_key is None]
        with self._table_required():
            for start in range(0, len(plain), self._d.insert_chunk):
                chunk = plain[start:start + self._d.insert_chunk]
                for index, task_id in zip(chunk, self._insert_rows([tasks[i] for i in chunk]), strict=True):
                    ids[index] = task_id
            for index, task in enumerate(tasks):
                if task.dedupe_key is not None:
                    ids[index] = self._insert_deduplicated(task)
        return [task_id for task_id in ids if task_id is not None]

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
            return sorted(row[0] for row in self._execute(statement + self.sql.insert_returning, params).fetchall())
        if preparer := self._preparer:
            one = self.sql.insert_one + self.sql.insert_returning
            cursor = preparer.execute_prepared(one, self._bulk_row(tasks[0]))
            return [cursor.fetchone()[0]]
        statement, params = self._values(tasks)
        if self._d.insert_returns_ids or self._is_mariadb():
            cursor = self._execute(self._d.fix(statement + self.sql.insert_returning), params)
            return sorted(row[0] for row in cursor.fetchall())
        cursor = self._execute(self._d.fix(statement), params)
        return list(range(cursor.lastrowid, cursor.lastrowid + len(tasks)))  # consecutive in one statement

    def _insert_deduplicated(self, task: NewTask) -> int:
        statement, params = self._values([task])
        if self.dialect == "mysql":
            self._execute(self._d.fix(f"{statement} {self.sql.insert_or_skip}"), params)
        else:  # the new row's id comes back at once; a kept row's is read below
            inserted = self._execute(self._d.fix(f"{statement} {self.sql.insert_or_skip}{self.sql.insert_returning}"),
                                     params).fetchone()
            if inserted:
                return int(inserted[0])
        row = self._execute(self.sql.id_by_dedupe_key, (task.dedupe_key,)).fetchone()
        return int(row[0])

    def _is_mariadb(self) -> bool:
        """MariaDB (10.5+) has ``INSERT … RETURNING``; MySQL 8 does not."""
        conn = self.db.connection()
        return "mariadb" in str(getattr(conn, "get_server_info", lambda: "")()).lower()
