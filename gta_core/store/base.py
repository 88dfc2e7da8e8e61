"""What every part of `TaskStore` stands on: one task table on one peewee Database, its
statements, and the ways to run them (plain, prepared on the hot path, as a one-statement write)."""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import peewee

from ..db.connect import PostgresDatabase, dialect_of, install_sqlite_functions
from ..db.transactions import in_statement
from .sql.dialects import numbered
from .sql.statements import statements

#: the default of the ``attempts_kept`` setting
ATTEMPTS_KEPT = 50


class StoreBase:
    """The connection and statements that `TaskStore`'s parts (schema, inserts, leasing and
    outcomes, operations) share."""

    def __init__(self, db: peewee.Database, table: str, *, attempts_kept: int = ATTEMPTS_KEPT) -> None:
        self.db = db
        self.table = table
        #: the attempt log keeps each task's first and last this many entries (`store.attempts`)
        self.attempts_kept = attempts_kept
        self.dialect = dialect_of(db)
        self.sql = statements(self.dialect, table)
        self._d = self.sql.dialect
        install_sqlite_functions(db)

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.db.execute_sql(sql, tuple(params))

    @property
    def _preparer(self) -> PostgresDatabase | None:
        """The database, where the hot statements run prepared: PostgreSQL through psycopg2."""
        return self.db if isinstance(self.db, PostgresDatabase) and self.db.prepares else None

    def _execute_hot(self, sql: str, params: Sequence[Any]) -> Any:
        """`_execute` for a statement (``?`` placeholders) on the hot path: prepared where the
        database can (PostgreSQL through psycopg2), as parsing and planning a lease of 25 rows
        cost as much as running it."""
        if preparer := self._preparer:
            return preparer.execute_prepared(numbered(sql), params)
        return self._execute(self._d.fix(sql), params)

    def sending(self) -> float:
        """Connect this thread if it has no connection, then the moment (monotonic) the next
        statement is sent: when a statement that sets leases takes effect at the earliest,
        whatever connecting took."""
        if self.db.is_closed():
            self.db.connect()
        return time.monotonic()

    def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        return int(in_statement(self.db, lambda: self._execute(sql, params).rowcount))

    def _secs(self, seconds: float) -> float | int:
        return self._d.seconds_param(seconds)
