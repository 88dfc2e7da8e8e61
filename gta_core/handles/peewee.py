"""peewee handles: a Database (its open transaction, or one of GTA's own) or its ``atomic()``.

A Database other than GTA's own object is checked to be on GTA's database from its settings
(dialect, and the file on SQLite or the database name elsewhere), without opening or reading
anything: a task written in another database would never run.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import peewee

from ..db.connect import dialect_of, drop_if_hung_up
from ..db.sqlite_locks import lock_errors
from ..db.transactions import in_statement, in_transaction
from ..errors import SubmitError
from ..runtime import Runtime
from ..store.inserts import NewTask
from ..store.task_store import TaskStore
from . import KINDS, OWN_TRANSACTION, Handle, refuse_none
from .connection import check_database, check_dialect, database_name

T = TypeVar("T")
#: how a peewee transaction begins IMMEDIATE on SQLite (`sqlite_locks`)
IMMEDIATE = "`with gta_core.transaction(db) as tx:` (or peewee's own `db.atomic('IMMEDIATE')`)"


class PeeweeHandle(Handle):
    def __init__(self, db: peewee.Database) -> None:
        self.db = db
        self.kind = f"peewee {type(db).__name__}"

    def write(self, runtime: Runtime, queries: Callable[[TaskStore], T]) -> T:
        db, store = self.db, runtime.store_for(self.db)
        with self._lock_errors():
            if db.in_transaction():
                done = queries(store)
                wake_after_commit(runtime, db)
                return done
            done = in_transaction(db, lambda: queries(store))
        runtime.wake_idle_workers()
        return done

    def insert(self, runtime: Runtime, rows: Sequence[NewTask]) -> list[int]:
        """As `Handle.insert`; outside a transaction, rows PostgreSQL takes in one statement go
        in that statement alone, which the server runs as a transaction of its own: one round
        trip, where ``BEGIN``/``COMMIT`` around it made two. Such a statement cannot be sent
        again once sent (it may have committed), so a connection the server hung up on is
        dropped before it is used (`drop_if_hung_up`) rather than retried after."""
        db, store = self.db, runtime.store_for(self.db)
        if db.in_transaction() or not store.inserts_in_one_statement(rows):
            return super().insert(runtime, rows)
        drop_if_hung_up(db)
        done = in_statement(db, lambda: store.insert(rows))
        runtime.wake_idle_workers()
        return done

    def cancel(self, runtime: Runtime, ids: Sequence[int], force: bool, by: str | None = None) -> dict[int, str]:
        with self._lock_errors():
            return runtime.store_for(self.db).cancel(ids, force, by)

    def _lock_errors(self) -> contextlib.AbstractContextManager[None]:
        return lock_errors(self.kind, IMMEDIATE, lambda sql: self.db.execute_sql(sql).fetchall())

    def after_commit(self, fn: Callable[[], None]) -> None:
        db = self.db

        def after_commit() -> None:
            """Run after COMMIT; if ``fn`` raises, peewee answers by rolling back a transaction
            that is already over, which SQLite refuses with an error that hides ``fn``'s.
            An empty transaction opened first gives that rollback something to end."""
            try:
                fn()
            except BaseException:
                try:
                    db.execute_sql("BEGIN")
                except Exception:  # then the rollback's own error wins, fn's stays its context
                    pass
                raise
        if db.in_transaction():
            db.after_commit(after_commit)
        else:
            fn()


def adapt(handle: Any, runtime: Runtime, name: str = "db_tx") -> PeeweeHandle:
    return PeeweeHandle(database_of(handle, runtime, name))


def database_of(handle: Any, runtime: Runtime, name: str = "db_tx") -> peewee.Database:
    """The peewee Database a handle writes through: `OWN_TRANSACTION` is GTA's own; None,
    anything else no adapter takes, and a Database on another database than GTA's are refused
    (`SubmitError`, before anything is written)."""
    refuse_none(handle, name)
    if handle is OWN_TRANSACTION:
        return runtime.db
    db = handle if isinstance(handle, peewee.Database) else getattr(handle, "db", None)
    if not isinstance(db, peewee.Database):
        raise SubmitError(f"{name} must be {KINDS}, or gta_core.OWN_TRANSACTION for GTA's own connection; "
                          f"got {type(handle).__name__}")
    if db is not runtime.db:
        kind = f"peewee {type(db).__name__}"
        check_dialect(kind, dialect_of(db), runtime)
        check_database(kind, runtime, database_name(db))
    return db


def wake_after_commit(runtime: Runtime, db: peewee.Database) -> None:
    """Register one local wake-up for when the caller's outermost transaction on ``db`` (which
    is on GTA's database) commits."""
    if dialect_of(db) == "postgres":
        return
    transactions = db._state.transactions  # type: ignore[attr-defined]  # peewee's transaction stack
    top = transactions[0] if transactions else None
    if top is None or getattr(top, "_gta_wake", False):
        return
    try:
        db.after_commit(runtime.wake_idle_workers)
    except ValueError:  # manual commit mode has no commit hook; polling will find the task
        return
    top._gta_wake = True
