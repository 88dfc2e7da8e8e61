"""SQLAlchemy 2.x async handles: an ``AsyncSession`` (or ``async_scoped_session``) or an
``AsyncConnection``, written through the connection of their transaction with
``exec_driver_sql`` (asyncpg, psycopg, aiomysql/asyncmy, aiosqlite drivers).

Both begin a transaction on first use, and so does a submit: the task is then committed or
rolled back with their own writes (a rolled-back ``begin_nested()`` takes its tasks with it).
A connection in ``AUTOCOMMIT`` isolation is refused. The wake-up is sent by the session's
``after_commit`` event, or the connection's ``commit`` event (PostgreSQL: the ``NOTIFY``).
A synchronous Session or Connection is left to `gta_core.handles.sqlalchemy`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_scoped_session

from ..runtime import Runtime
from .async_connection import AsyncConnectionHandle
from .asyncio_aiosqlite import install_clock_functions
from .sqlalchemy import DIALECTS, IMMEDIATE


class SQLAlchemyAsyncHandle(AsyncConnectionHandle):
    def __init__(self, kind: str, connection: AsyncConnection, no_transaction: str | None,
                 on_commit: Callable[[Callable[[], None]], None]) -> None:
        dialect = connection.dialect
        super().__init__(kind, DIALECTS.get(dialect.name, dialect.name), no_transaction, on_commit,
                         numbered=dialect.paramstyle == "numeric_dollar",
                         returns_ids=dialect.name != "mysql" or bool(getattr(dialect, "is_mariadb", False)),
                         immediate=f"{IMMEDIATE} (on `engine.sync_engine`)")
        self.connection = connection

    async def run(self, sql: str, params: Sequence[Any], wants: str | None) -> Any:
        result = await self.connection.exec_driver_sql(sql, tuple(params))
        if wants == "lastrowid":
            return result.lastrowid
        return result.fetchall() if wants == "rows" else None


async def adapt(handle: Any, runtime: Runtime) -> SQLAlchemyAsyncHandle | None:
    if isinstance(handle, async_scoped_session):
        handle = handle()
    if isinstance(handle, AsyncSession):
        kind, connection = "SQLAlchemy AsyncSession", await handle.connection()  # begins its transaction
        session = handle.sync_session

        def on_commit(fn: Callable[[], None]) -> None:
            event.listen(session, "after_commit", lambda _: fn(), once=True)
    elif isinstance(handle, AsyncConnection):
        kind, connection = "SQLAlchemy AsyncConnection", handle
        if not connection.in_transaction():
            await connection.begin()  # what its own next statement would do; its commit() ends it
        sync = connection.sync_connection

        def on_commit(fn: Callable[[], None]) -> None:
            event.listen(sync, "commit", lambda _: fn(), once=True)
    else:
        return None  # a sync Session or Connection: `submit`'s
    raw = await connection.get_raw_connection()
    reason = None
    if _autocommit(raw.dbapi_connection):
        reason = (f"the {kind} is in AUTOCOMMIT isolation, so the task would commit on its own: "
                  "use a transactional connection, or submit on GTA's own connection")
    if connection.dialect.name == "sqlite":
        await install_clock_functions(raw.driver_connection)
    return SQLAlchemyAsyncHandle(kind, connection, reason, on_commit)


def _autocommit(adapted: Any) -> bool:
    """Whether SQLAlchemy's adapted async DB-API connection commits each statement: its
    ``autocommit`` flag (asyncpg, psycopg), the server's (aiomysql, asyncmy), or no isolation
    level and no ``BEGIN`` sent (aiosqlite, as sqlite3: an engine whose "begin" event sends
    ``BEGIN IMMEDIATE`` itself, as docs/integrations.md says for SQLite, is in a transaction)."""
    if hasattr(adapted, "get_autocommit"):
        return bool(adapted.get_autocommit())
    driver = adapted.driver_connection
    if type(driver).__module__.partition(".")[0] == "aiosqlite":
        return driver.isolation_level is None and not driver.in_transaction  # type: ignore[no-any-return]
    return bool(adapted.autocommit)

