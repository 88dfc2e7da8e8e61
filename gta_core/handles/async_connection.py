"""Async transaction handles (`gta_core.asubmit`): an application's asyncpg, psycopg 3
``AsyncConnection``, aiomysql connection or SQLAlchemy ``AsyncSession``/``AsyncConnection``,
as the place GTA writes its rows in without blocking the event loop.

`resolve` picks an adapter module by the handle's type, as `gta_core.handles.resolve` does,
and imports it only then. Each adapter says how to run one statement on its connection and
whether a transaction is open; the statements are the store's own insert plan
(`InsertQueries.insert_steps`), awaited one at a time, after the same checks as a sync
connection's (`gta_core.handles.connection`): GTA's dialect, database and task table, with
nothing read before the insert on SQLite.
"""
from __future__ import annotations

import abc
import dataclasses
import importlib
import re
import time
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..db.sqlite_locks import BUSY_TIMEOUT, busy_error, busy_timeout, locked
from ..db.wakeup import notify_local
from ..errors import SubmitError
from ..store.inserts import Query
from ..store.task_store import TaskStore
from . import is_async, refuse_none
from .connection import (
    borrowed_database,
    check_database,
    check_dialect,
    check_table,
    hook_for_eager,
    where_answer,
    where_query,
)

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..store.inserts import NewTask

T = TypeVar("T")
#: top-level package of an async handle's class → the adapter module that writes through it
ADAPTERS = {"asyncpg": "asyncio_asyncpg", "psycopg": "asyncio_psycopg", "aiomysql": "asyncio_aiomysql",
            "aiosqlite": "asyncio_aiosqlite", "sqlalchemy": "asyncio_sqlalchemy"}
ASYNC_KINDS = ("an asyncpg connection, a psycopg AsyncConnection, an aiomysql or aiosqlite connection, or a "
               "SQLAlchemy AsyncSession or AsyncConnection")
_FORMAT_MARK = re.compile(r"%[s%]")


@dataclasses.dataclass
class AsyncConnectionHandle(abc.ABC):
    """A caller's async connection with its transaction open (see the adapters)."""

    #: what the caller passed, as errors name it ("asyncpg connection")
    kind: str
    #: ``sqlite``, ``postgres`` or ``mysql``
    dialect: str
    #: why no transaction is open to write in (each statement would commit at once), or None
    no_transaction: str | None = None
    #: registers a callback for the caller's outermost commit; None where the driver has none
    on_commit: Callable[[Callable[[], None]], None] | None = None
    #: the driver takes PostgreSQL's ``$1`` placeholders (asyncpg), not ``%s``
    numbered: bool = False
    #: the database has ``INSERT … RETURNING`` (all but MySQL 8)
    returns_ids: bool = True
    #: on SQLite, how this kind of handle begins its transactions IMMEDIATE (`sqlite_locks`)
    immediate: str = ""

    @abc.abstractmethod
    async def run(self, sql: str, params: Sequence[Any], wants: str | None) -> Any:
        """Execute one statement in the caller's transaction: its rows (tuples or records),
        the first inserted id (``wants == "lastrowid"``), or None."""

    async def insert(self, runtime: Runtime, rows: Sequence[NewTask]) -> list[int]:
        """Insert checked rows in the caller's transaction and arrange the wake-up for its commit
        (on PostgreSQL the insert's ``NOTIFY`` is delivered at commit)."""
        store = await self._store(runtime)
        steps = store.insert_steps(rows, returns_ids=self.returns_ids, numbered=self.numbered)
        started = time.monotonic()
        try:
            with store._table_required():
                ids = await run_async_steps(steps, self._run)
        except Exception as exc:
            if (error := busy_error(exc)) is None:
                raise
            waited = time.monotonic() - started
            raise locked(self.kind, self.immediate, error, waited, await self._busy_timeout()) from exc
        if self.dialect != "postgres" and self.on_commit is not None:
            key = runtime.wake_key(runtime.db)
            self.on_commit(lambda: notify_local(key))
        return ids

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the caller's outermost transaction commits (eager mode)."""
        hook_for_eager(self.kind, self.no_transaction, self.on_commit)(fn)

    async def _busy_timeout(self) -> float | None:
        """The connection's SQLite busy timeout (`db.sqlite_locks.busy_timeout`), after a refused write."""
        try:
            rows = await self._run(Query(BUSY_TIMEOUT, ()))
        except Exception:
            return None
        return busy_timeout(lambda _: rows)

    async def _store(self, runtime: Runtime) -> TaskStore:
        """A store whose insert plan runs here (no connection of its own: it only builds the
        statements), once the caller's connection is known to be on GTA's database (asked as
        `ConnectionHandle` asks it: nothing is read on SQLite)."""
        if self.no_transaction:
            raise SubmitError(self.no_transaction)
        check_dialect(self.kind, self.dialect, runtime)
        table = runtime.settings.table
        database, has_table = where_answer(self.dialect, await self._run(where_query(self.dialect, table)))
        check_database(self.kind, runtime, database)
        check_table(runtime, database, has_table)
        return TaskStore(borrowed_database(self.dialect), table)

    def _run(self, query: Query) -> Any:
        sql = query.sql
        if self.numbered and not query.numbered:
            sql = numbered_marks(sql)
        return self.run(sql, query.params, query.wants)


def numbered_marks(sql: str) -> str:
    """A statement's ``%s`` placeholders as ``$1``, ``$2``, … (``%%`` as ``%``)."""
    count = 0

    def mark(match: re.Match[str]) -> str:
        nonlocal count
        if match.group() == "%%":
            return "%"
        count += 1
        return f"${count}"
    return _FORMAT_MARK.sub(mark, sql)


async def run_async_steps(steps: Generator[Query, Any, T], run: Callable[[Query], Any]) -> T:
    """`gta_core.store.inserts.run_steps` for a runner that returns awaitables."""
    try:
        query = next(steps)
        while True:
            query = steps.send(await run(query))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def resolve(handle: Any, runtime: Runtime, name: str = "db_tx") -> AsyncConnectionHandle | None:
    """The async adapter for ``handle``, or None for a handle the sync `submit` takes
    (`SubmitError` for None: it never means GTA's own transaction)."""
    refuse_none(handle, name)
    for klass in type(handle).__mro__:
        module = ADAPTERS.get(klass.__module__.partition(".")[0])
        if module is not None:
            adapter: Any = importlib.import_module(f"{__package__}.{module}")
            return await adapter.adapt(handle, runtime)  # type: ignore[no-any-return]
    if is_async(handle):
        raise SubmitError(f"{name} must be {ASYNC_KINDS} (or a handle `submit` takes); "
                          f"got {type(handle).__name__}")
    return None
