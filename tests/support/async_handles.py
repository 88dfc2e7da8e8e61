"""The application side of an async transaction, one class per kind of handle `asubmit`
accepts: what a caller holds, how it commits and rolls back. Shared by the asubmit tests."""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlparse

from .handles import mysql_params, sqlite_path


class AsyncCaller:
    """One open transaction of the application's own, of some async kind."""

    handle: Any

    async def commit(self) -> None:
        raise NotImplementedError

    async def rollback(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        pass

    def savepoint(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """A nested transaction: rolled back when its block raises, kept otherwise."""
        return self._savepoint_statements()

    @contextlib.asynccontextmanager
    async def _savepoint_statements(self) -> AsyncIterator[None]:
        await self.execute("SAVEPOINT app")
        try:
            yield
        except BaseException:
            await self.execute("ROLLBACK TO SAVEPOINT app")
            raise
        await self.execute("RELEASE SAVEPOINT app")

    async def execute(self, sql: str) -> None:
        raise NotImplementedError


class AsyncpgCaller(AsyncCaller):
    """``async with connection.transaction():`` entered by hand."""

    async def open(self, url: str) -> AsyncpgCaller:
        import asyncpg
        self.handle = await asyncpg.connect(url)
        self.transaction = self.handle.transaction()
        await self.transaction.start()
        return self

    async def commit(self) -> None:
        await self.transaction.commit()

    async def rollback(self) -> None:
        await self.transaction.rollback()

    def savepoint(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self.handle.transaction()  # type: ignore[no-any-return]  # nested: a savepoint

    async def close(self) -> None:
        await self.handle.close()


class DriverCaller(AsyncCaller):
    """A psycopg ``AsyncConnection`` or an aiomysql connection: a transaction from the first statement."""

    async def open(self, url: str) -> DriverCaller:
        if url.startswith("postgresql:"):
            import psycopg
            self.handle = await psycopg.AsyncConnection.connect(url)
        else:
            import aiomysql
            params = mysql_params(url)
            self.handle = await aiomysql.connect(host=params["host"], port=params["port"], user=params["user"],
                                                 password=params["password"], db=params["database"])
        return self

    async def commit(self) -> None:
        await self.handle.commit()

    async def rollback(self) -> None:
        await self.handle.rollback()

    async def close(self) -> None:
        result = self.handle.close()
        if result is not None:
            await result

    async def execute(self, sql: str) -> None:
        async with self.handle.cursor() as cursor:
            await cursor.execute(sql)


class AiosqliteCaller(AsyncCaller):
    """An aiosqlite connection: a transaction from the first write, as sqlite3's."""

    async def open(self, url: str) -> AiosqliteCaller:
        import aiosqlite
        self.handle = await aiosqlite.connect(sqlite_path(url), timeout=30)
        return self

    async def commit(self) -> None:
        await self.handle.commit()

    async def rollback(self) -> None:
        await self.handle.rollback()

    async def close(self) -> None:
        await self.handle.close()

    async def execute(self, sql: str) -> None:
        await self.handle.execute(sql)


class SQLAlchemyAsyncCaller(AsyncCaller):
    def __init__(self, session: bool) -> None:
        self.session = session

    async def open(self, url: str) -> SQLAlchemyAsyncCaller:
        from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
        from sqlalchemy.pool import NullPool
        self.engine = create_async_engine(url, poolclass=NullPool)
        self.handle = AsyncSession(self.engine) if self.session else await self.engine.connect()
        return self

    async def commit(self) -> None:
        await self.handle.commit()

    async def rollback(self) -> None:
        await self.handle.rollback()

    async def close(self) -> None:
        await self.handle.close()
        await self.engine.dispose()

    def savepoint(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self.handle.begin_nested()  # type: ignore[no-any-return]


class SyncCaller(AsyncCaller):
    """A sqlite3 connection: a handle `submit` takes, which `asubmit` writes synchronously."""

    async def open(self, url: str) -> SyncCaller:
        import sqlite3
        self.handle = sqlite3.connect(sqlite_path(url), timeout=30)
        return self

    async def commit(self) -> None:
        self.handle.commit()

    async def rollback(self) -> None:
        self.handle.rollback()

    async def close(self) -> None:
        self.handle.close()

    async def execute(self, sql: str) -> None:
        self.handle.execute(sql)


def driver_url(url: str, driver: str) -> str:
    """A GTA URL with SQLAlchemy's ``+driver`` (``sqlite+aiosqlite:///…``)."""
    scheme = urlparse(url).scheme
    return url.replace(f"{scheme}:", f"{scheme}+{driver}:", 1)


#: kinds of async handle per backend: name → what opens a caller on the database at a GTA URL
ASYNC_KINDS: dict[str, dict[str, Callable[[str], Awaitable[AsyncCaller]]]] = {
    "sqlite": {
        "sqlalchemy-session-aiosqlite": lambda url: SQLAlchemyAsyncCaller(True).open(driver_url(url, "aiosqlite")),
        "sqlalchemy-connection-aiosqlite":
            lambda url: SQLAlchemyAsyncCaller(False).open(driver_url(url, "aiosqlite")),
        "aiosqlite": lambda url: AiosqliteCaller().open(url),
        "sqlite3": lambda url: SyncCaller().open(url),
    },
    "postgres": {
        "asyncpg": lambda url: AsyncpgCaller().open(url),
        "psycopg-async": lambda url: DriverCaller().open(url),
        "sqlalchemy-session-asyncpg": lambda url: SQLAlchemyAsyncCaller(True).open(driver_url(url, "asyncpg")),
        "sqlalchemy-connection-psycopg":
            lambda url: SQLAlchemyAsyncCaller(False).open(driver_url(url, "psycopg_async")),
    },
    "mariadb": {
        "aiomysql": lambda url: DriverCaller().open(url),
        "sqlalchemy-session-aiomysql": lambda url: SQLAlchemyAsyncCaller(True).open(driver_url(url, "aiomysql")),
    },
}
#: the kinds without a commit hook on a database without NOTIFY: polling finds their tasks
UNWOKEN = {("mariadb", "aiomysql"), ("sqlite", "aiosqlite"), ("sqlite", "sqlite3")}
#: the kinds eager mode can run from (it needs a commit hook)
EAGER = {"sqlalchemy-session-aiosqlite", "sqlalchemy-connection-aiosqlite", "sqlalchemy-session-asyncpg",
         "sqlalchemy-connection-psycopg", "sqlalchemy-session-aiomysql"}
