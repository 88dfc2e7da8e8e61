"""The shared part of every handle that is not peewee's: GTA's statements, run on the
caller's own DB-API connection inside the transaction open on it.

The connection is lent to a throwaway peewee Database of its dialect, so the rows are built
by `TaskStore` exactly as for GTA's own connection (on PostgreSQL the ``NOTIFY`` rides in
the insert's ``RETURNING``). Before anything is written the connection is checked to be on
GTA's database: a task written anywhere else would never run. On SQLite that check reads
nothing (``PRAGMA database_list`` takes no snapshot, where any ``SELECT`` would make the
caller's transaction a reader that cannot wait for the write lock: `sqlite_locks`), and a
missing task table is told by the insert's own error; on PostgreSQL and MySQL one query asks
for the database and the table, so that a missing table does not abort the caller's
transaction there.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote

import peewee

from ..db.connect import dialect_of
from ..db.sqlite_locks import lock_errors
from ..db.wakeup import notify_local
from ..errors import SchemaError, SubmitError
from ..runtime import Runtime
from ..store.inserts import Query
from ..store.sql.statements import statements
from ..store.task_store import TaskStore
from . import Handle

T = TypeVar("T")
_DATABASES: dict[str, type[peewee.Database]] = {
    "sqlite": peewee.SqliteDatabase,
    "postgres": peewee.PostgresqlDatabase,
    "mysql": peewee.MySQLDatabase,
}
#: how an SQLite database private to one connection is named in checks and messages
MEMORY = ":memory:"


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
    #: on SQLite, how this kind of handle begins its transactions IMMEDIATE (`sqlite_locks`)
    immediate: str = ""

    def write(self, runtime: Runtime, queries: Callable[[TaskStore], T]) -> T:
        store = self._store(runtime)
        with store._table_required(), self._lock_errors(store):
            done = queries(store)
        if store.dialect != "postgres" and self.on_commit is not None:
            key = runtime.wake_key(runtime.db)
            self.on_commit(lambda: notify_local(key))
        return done

    def cancel(self, runtime: Runtime, ids: Sequence[int], force: bool, by: str | None = None) -> dict[int, str]:
        store = self._store(runtime)
        with store._table_required(), self._lock_errors(store):
            return store.cancel_in_transaction(ids, force, by)

    def after_commit(self, fn: Callable[[], None]) -> None:
        hook_for_eager(self.kind, self.no_transaction, self.on_commit)(fn)

    def _lock_errors(self, store: TaskStore) -> contextlib.AbstractContextManager[None]:
        return lock_errors(self.kind, self.immediate, lambda sql: store._execute(sql).fetchall())

    def _store(self, runtime: Runtime) -> TaskStore:
        """A store on the caller's connection, once it is known to be GTA's database."""
        if self.no_transaction:
            raise SubmitError(self.no_transaction)
        check_dialect(self.kind, self.dialect, runtime)
        borrowed = borrowed_database(self.dialect)
        borrowed._state.set_connection(self.connection)  # type: ignore[attr-defined]
        store = TaskStore(borrowed, runtime.settings.table, attempts_kept=runtime.settings.attempts_kept)
        query = where_query(self.dialect, store.table)
        database, has_table = where_answer(self.dialect, store._execute(query.sql, query.params).fetchall())
        check_database(self.kind, runtime, database)
        check_table(runtime, database, has_table)
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


def where_query(dialect: str, table: str) -> Query:
    """What a caller's connection is asked to tell which database it is on (`where_answer`)."""
    return Query(statements(dialect, table).database_and_table, () if dialect == "sqlite" else (table,))


def where_answer(dialect: str, rows: Sequence[Sequence[Any]]) -> tuple[str, bool | None]:
    """The database a caller's connection is on (the file of SQLite's main database, `MEMORY`
    for one private to the connection) and whether the task table is there (None on SQLite,
    where the insert tells)."""
    if dialect == "sqlite":  # PRAGMA database_list: (seq, name, file) per attached database
        return sqlite_file(next((str(file or "") for _, name, file in rows if name == "main"), "")), None
    (database, found), = rows
    return str(database or ""), bool(found)


def sqlite_file(name: str, uri: bool = False) -> str:
    """The file an SQLite database name opens, as a real path (`MEMORY` for an in-memory or
    temporary database); ``uri``: the name may be a ``file:`` URI (sqlite3's ``uri=True``)."""
    if uri and name.startswith("file:"):
        path, _, query = name[len("file:"):].partition("?")
        name = MEMORY if "mode=memory" in query.split("&") else unquote(path)
    if name in ("", MEMORY):
        return MEMORY
    return _real_path(name, os.getcwd())


@functools.lru_cache(maxsize=64)
def _real_path(name: str, cwd: str) -> str:
    """``os.path.realpath``, once per name and working directory: it stats every component of
    the path, which would cost a submit through an application's Database a tenth of its time."""
    return os.path.realpath(os.path.join(cwd, name))


def database_name(db: peewee.Database) -> str:
    """The database a peewee Database opens, read from its settings (nothing is opened): the
    file on SQLite (`sqlite_file`), the database name on PostgreSQL and MySQL."""
    if dialect_of(db) == "sqlite":
        return sqlite_file(str(db.database or ""), bool(db.connect_params.get("uri")))
    return str(db.database or "")


def check_dialect(kind: str, dialect: str, runtime: Runtime) -> None:
    """`SubmitError` unless the caller's connection is of GTA's database's dialect."""
    expected = dialect_of(runtime.db)
    if dialect != expected:
        raise SubmitError(f"the {kind} is on {dialect}, GTA's database is {expected} "
                          "(GTA_DATABASE_URL, which must be your application's database): a task written there "
                          "would never run")


def check_database(kind: str, runtime: Runtime, database: str) -> None:
    """`SubmitError` unless ``database`` (what a caller's handle is on: a file on SQLite, a name
    on servers) is GTA's. Two in-memory SQLite databases are never the same one. Servers are
    compared by database name only: one server goes by many host names and ports (localhost or
    127.0.0.1, a socket, a pooler's port), so those would refuse good handles."""
    ours = database_name(runtime.db)
    if database != ours or database == MEMORY:
        raise SubmitError(f"the {kind} is on database {database!r}, GTA's is {ours!r} "
                          "(GTA_DATABASE_URL, which must be your application's database): a task written there "
                          "would never run")


def check_table(runtime: Runtime, database: str, has_table: bool | None) -> None:
    """`SchemaError` when the caller's database is known to lack the task table."""
    if has_table is False:
        raise SchemaError(f"task table {runtime.settings.table!r} is missing in database {database!r}: "
                          "run `gta migrate`")
