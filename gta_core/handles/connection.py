"""The shared part of every handle that is not peewee's: GTA's statements, run on the
caller's own DB-API connection inside the transaction open on it.

The connection is lent to a throwaway peewee Database of its dialect, so the rows are built
by `TaskStore` exactly as for GTA's own connection (on PostgreSQL the ``NOTIFY`` rides in
the insert's ``RETURNING``). Before anything is written the connection is checked to be on
GTA's database with the task table present: a task written anywhere else would never run.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import peewee

from ..database import dialect_of
from ..errors import SchemaError, SubmitError
from ..runtime import Runtime
from ..store import TaskStore
from ..store_insert import NewTask
from ..wake import notify_local
from . import Handle

_DATABASES: dict[str, type[peewee.Database]] = {
    "sqlite": peewee.SqliteDatabase,
    "postgres": peewee.PostgresqlDatabase,
    "mysql": peewee.MySQLDatabase,
}


@dataclasses.dataclass
class ConnectionHandle(Handle):
    #: what the caller passed, as errors name it ("SQLAlchemy Session")
    kind: str
    #: ``sqlite``, ``postgres`` or ``mysql``
    dialect: str
    #: the DB-API connection the caller's transaction is open on
    connection: Any
    #: why no transaction is open to write in (the handle commits each statement), or None
    no_transaction: str | None = None
    #: registers a callback for the caller's outermost commit; None where the handle has no hook
    on_commit: Callable[[Callable[[], None]], None] | None = None

    def insert(self, runtime: Runtime, rows: Sequence[NewTask]) -> list[int]:
        store = self._store(runtime)
        ids = store.insert(rows)
        if store.dialect != "postgres" and self.on_commit is not None:
            key = runtime.wake_key(runtime.db)
            self.on_commit(lambda: notify_local(key))
        return ids

    def cancel(self, runtime: Runtime, ids: Sequence[int], force: bool, by: str | None = None) -> dict[int, str]:
        return self._store(runtime).cancel_in_transaction(ids, force, by)

    def after_commit(self, fn: Callable[[], None]) -> None:
        hook_for_eager(self.kind, self.no_transaction, self.on_commit)(fn)

    def _store(self, runtime: Runtime) -> TaskStore:
        """A store on the caller's connection, once it is known to be GTA's database."""
        if self.no_transaction:
            raise SubmitError(self.no_transaction)
        check_dialect(self.kind, self.dialect, runtime)
        borrowed = borrowed_database(self.dialect)
        borrowed._state.set_connection(self.connection)  # type: ignore[attr-defined]
        store = TaskStore(borrowed, runtime.settings.table, attempts_kept=runtime.settings.attempts_kept)
        check_database(self.kind, self.dialect, runtime, *store.database_and_table())
        return store


def hook_for_eager(kind: str, no_transaction: str | None,
                   on_commit: Callable[[Callable[[], None]], None] | None) -> Callable[[Callable[[], None]], None]:
    """The commit hook eager mode runs its tasks from; `SubmitError` where there is none."""
    if no_transaction:
        raise SubmitError(no_transaction)
    if on_commit is None:
        raise SubmitError(f"a {kind} has no commit hook, so eager mode cannot run tasks when it commits: "
                          "submit through a peewee, SQLAlchemy or Django handle in eager tests")
    return on_commit


def borrowed_database(dialect: str) -> peewee.Database:
    """A peewee Database of ``dialect`` with no connection of its own, to lend one to."""
    return _DATABASES[dialect](None, thread_safe=False)


def check_dialect(kind: str, dialect: str, runtime: Runtime) -> None:
    """`SubmitError` unless the caller's connection is of GTA's database's dialect."""
    expected = dialect_of(runtime.db)
    if dialect != expected:
        raise SubmitError(f"the {kind} is on {dialect}, GTA's database is {expected} "
                          "(GTA_DATABASE_URL): a task written there would never run")


def check_database(kind: str, dialect: str, runtime: Runtime, database: str, has_table: bool) -> None:
    """`SubmitError` unless the caller's connection (on ``database``, seeing the task table or
    not: `Statements.database_and_table`) is on GTA's database; `SchemaError` without the table."""
    ours = str(runtime.db.database)
    if dialect == "sqlite":
        database, ours = os.path.realpath(database) if database else ":memory:", os.path.realpath(ours)
    if database != ours:
        raise SubmitError(f"the {kind} is on database {database!r}, GTA's is {ours!r} "
                          "(GTA_DATABASE_URL): a task written there would never run")
    if not has_table:
        raise SchemaError(f"task table {runtime.settings.table!r} is missing in database {database!r}: "
                          "run `gta migrate`")
