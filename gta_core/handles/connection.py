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

    def cancel(self, runtime: Runtime, ids: Sequence[int], force: bool) -> dict[int, str]:
        return self._store(runtime).cancel_in_transaction(ids, force)

    def after_commit(self, fn: Callable[[], None]) -> None:
        if self.no_transaction:
            raise SubmitError(self.no_transaction)
        if self.on_commit is None:
            raise SubmitError(f"a {self.kind} has no commit hook, so eager mode cannot run tasks when it commits: "
                              "submit through a peewee, SQLAlchemy or Django handle in eager tests")
        self.on_commit(fn)

    def _store(self, runtime: Runtime) -> TaskStore:
        """A store on the caller's connection, once it is known to be GTA's database."""
        if self.no_transaction:
            raise SubmitError(self.no_transaction)
        expected = dialect_of(runtime.db)
        if self.dialect != expected:
            raise SubmitError(f"the {self.kind} is on {self.dialect}, GTA's database is {expected} "
                              "(GTA_DATABASE_URL): a task written there would never run")
        borrowed = _DATABASES[self.dialect](None, thread_safe=False)
        borrowed._state.set_connection(self.connection)  # type: ignore[attr-defined]
        store = TaskStore(borrowed, runtime.settings.table)
        database, has_table = store.database_and_table()
        ours = str(runtime.db.database)
        if self.dialect == "sqlite":
            database, ours = os.path.realpath(database) if database else ":memory:", os.path.realpath(ours)
        if database != ours:
            raise SubmitError(f"the {self.kind} is on database {database!r}, GTA's is {ours!r} "
                              "(GTA_DATABASE_URL): a task written there would never run")
        if not has_table:
            raise SchemaError(f"task table {runtime.settings.table!r} is missing in database {database!r}: "
                              "run `gta migrate`")
        return store
