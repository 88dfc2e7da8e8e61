"""Inserting tasks (the submit side's queries), mixed into `TaskStore`.

Multi-row inserts in chunks (`Dialect.insert_chunk`), PostgreSQL's constant-time bulk insert
and prepared one-row insert, and the dedupe insert that returns the kept row's id.

The plan is written once, without I/O (`InsertQueries.insert_steps` yields each `Query` and is
sent its result): `insert` runs it on the store's peewee connection, `gta_core.asubmit` awaits
each statement on an application's async connection.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Callable, Generator, Sequence
from typing import Any, Literal, TypeVar

from ..db.connect import utc_text
from .base import StoreBase


@dataclasses.dataclass(slots=True)
class NewTask:
    """A validated row to insert (see `gta_core.submit`). ``run_at`` wins over ``delay``.

    Treated as immutable (a changed row is a `dataclasses.replace` of it) but not frozen: a
    frozen dataclass sets each field through ``object.__setattr__``, which tripled the cost of
    making one, paid per row by a batch of 1,000 submits."""

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
    concurrency_key: str | None = None


T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Query:
    """One statement of an insert plan, for its runner to execute and send back the result."""

    #: with the dialect's driver placeholders (``%s``; ``?`` on SQLite), or ``$1``… when ``numbered``
    sql: str
    params: Sequence[Any]
    #: what to send back: the result rows, the first inserted id (MySQL 8), or nothing
    wants: Literal["rows", "lastrowid"] | None = "rows"
    numbered: bool = False


def run_steps(steps: Generator[Query, Any, T], run: Callable[[Query], Any]) -> T:
    """Drive a plan of `Query` steps with a function that executes one and returns its result."""
    try:
        query = next(steps)
        while True:
            query = steps.send(run(query))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


class InsertQueries(StoreBase):
    """What submit asks of the task table."""

    _table_required: Callable[[], contextlib.AbstractContextManager[None]]  # from `SchemaQueries`

    def insert(self, tasks: Sequence[NewTask]) -> list[int]:
        """Insert tasks with this store's connection and current transaction; their ids, in order.

        Rows without a dedupe key go in multi-row statements. A row with one is inserted
        unless a row with that key is kept, in which case the kept row's id is returned and
        nothing is written (the unique index decides, so racing submitters agree). On
        PostgreSQL a ``NOTIFY`` per queue rides in the same transaction.
        """
        preparer = self._preparer
        steps = self.insert_steps(tasks, returns_ids=self._d.insert_returns_ids or self._is_mariadb(),
                                  numbered=preparer is not None)

        def run(query: Query) -> Any:
            if query.numbered:
                assert preparer is not None
                cursor = preparer.execute_prepared(query.sql, query.params)
            else:
                cursor = self._execute(query.sql, query.params)
            return cursor.lastrowid if query.wants == "lastrowid" else cursor.fetchall() if query.wants else None
        with self._table_required():
            return run_steps(steps, run)

    def inserts_in_one_statement(self, tasks: Sequence[NewTask]) -> bool:
        """Whether `insert` sends these rows in a single statement on PostgreSQL (no dedupe key,
        one chunk), which then needs no transaction of its own (`handles.peewee`)."""
        return (self.dialect == "postgres" and len(tasks) <= self._d.insert_chunk
                and all(task.dedupe_key is None for task in tasks))

    def insert_steps(self, tasks: Sequence[NewTask], *, returns_ids: bool,
                     numbered: bool) -> Generator[Query, Any, list[int]]:
        """`insert`'s statements, one `Query` at a time (each is sent its result), returning the
        ids: the one plan both the sync store and `gta_core.asubmit`'s async connections run.
        ``returns_ids``: the database has ``INSERT … RETURNING`` (MySQL 8 has not);
        ``numbered``: the runner takes PostgreSQL's ``$1`` placeholders (and may prepare)."""
        ids: list[int | None] = [None] * len(tasks)
        if self.dialect == "sqlite":  # no id a rolled-back insert handed out comes again (`sqlite_ids`)
            yield Query(self.sql.raise_id_counter, (), wants=None)
        plain = [index for index, task in enumerate(tasks) if task.dedupe_key is None]
        for start in range(0, len(plain), self._d.insert_chunk):
            chunk = plain[start:start + self._d.insert_chunk]
            inserted = yield from self._insert_rows([tasks[i] for i in chunk], returns_ids, numbered)
            for index, task_id in zip(chunk, inserted, strict=True):
                ids[index] = task_id
        for index, task in enumerate(tasks):
            if task.dedupe_key is not None:
                ids[index] = yield from self._insert_deduplicated(task)
        handed_out = [task_id for task_id in ids if task_id is not None]
        if self.dialect == "sqlite" and handed_out:
            yield Query(self.sql.record_ids, (max(handed_out),))
        return handed_out

    def _values(self, tasks: Sequence[NewTask]) -> tuple[str, list[Any]]:
        sql, values, params = self.sql, [], []
        keyed = _keyed(tasks)
        row_at, row_delay = ((sql.insert_row_at_keyed, sql.insert_row_delay_keyed) if keyed
                             else (sql.insert_row_at, sql.insert_row_delay))
        for task in tasks:
            if task.run_at is not None:
                values.append(row_at)
                moment = task.run_at.astimezone(dt.timezone.utc).replace(tzinfo=None)
                when: Any = utc_text(moment) if self.dialect == "sqlite" else moment
            else:
                values.append(row_delay)
                when = self._secs(task.delay)
            params += [task.key, task.queue, task.priority, task.args, task.context, when, task.max_attempts,
                       task.dedupe_key, task.order_key, task.parent_id]
            if keyed:
                params.append(task.concurrency_key)
        return (sql.insert_prefix_keyed if keyed else sql.insert_prefix) + ", ".join(values), params

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

    def _insert_rows(self, tasks: Sequence[NewTask], returns_ids: bool,
                     numbered: bool) -> Generator[Query, Any, list[int]]:
        if self.dialect == "postgres" and len(tasks) > 1 and not _keyed(tasks):
            statement, params = self._bulk(tasks)
            rows = yield Query(statement + self.sql.insert_returning, params)
            return sorted(row[0] for row in rows)
        if self.dialect == "postgres" and numbered and not _keyed(tasks):
            rows = yield Query(self.sql.insert_one + self.sql.insert_returning, self._bulk_row(tasks[0]), numbered=True)
            return [rows[0][0]]
        statement, params = self._values(tasks)
        if returns_ids:
            rows = yield Query(self._d.fix(statement + self.sql.insert_returning), params)
            return sorted(row[0] for row in rows)
        first = yield Query(self._d.fix(statement), params, wants="lastrowid")
        return list(range(first, first + len(tasks)))  # consecutive in one statement

    def _insert_deduplicated(self, task: NewTask) -> Generator[Query, Any, int]:
        statement, params = self._values([task])
        if self.dialect == "mysql":
            yield Query(self._d.fix(f"{statement} {self.sql.insert_or_skip}"), params, wants=None)
        else:  # the new row's id comes back at once; a kept row's is read below
            inserted = yield Query(self._d.fix(f"{statement} {self.sql.insert_or_skip}{self.sql.insert_returning}"),
                                   params)
            if inserted:
                return int(inserted[0][0])
        rows = yield Query(self.sql.id_by_dedupe_key, (task.dedupe_key,))
        return int(rows[0][0])

    def _is_mariadb(self) -> bool:
        """MariaDB (10.5+) has ``INSERT … RETURNING``; MySQL 8 does not."""
        conn = self.db.connection()
        return "mariadb" in str(getattr(conn, "get_server_info", lambda: "")()).lower()


def _keyed(tasks: Sequence[NewTask]) -> bool:
    """Whether any of these rows carries a concurrency key (then they go through the multi-row
    ``VALUES`` insert with that column; PostgreSQL's bulk and prepared inserts stay as they were)."""
    return any(task.concurrency_key is not None for task in tasks)
