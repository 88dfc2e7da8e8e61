"""aiosqlite connections, inside their open transaction.

Like sqlite3's, an aiosqlite connection (outside ``isolation_level=None``) begins a transaction
before the first write, which the caller's ``await conn.commit()`` ends with the task in it;
with ``isolation_level=None`` and no ``BEGIN`` each statement would commit alone, and the
submit is refused. GTA's SQLite clock functions (``gta_now()``) are registered on the
connection first. There is no commit hook: the supervisor finds the task by its next poll.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..db.connect import install_sqlite_functions
from ..runtime import Runtime
from .async_connection import AsyncConnectionHandle
from .connection import borrowed_database

#: how an aiosqlite connection's transactions begin IMMEDIATE (`gta_core.db.sqlite_locks`)
IMMEDIATE = ("`await conn.execute('BEGIN IMMEDIATE')` instead of `BEGIN` (with isolation_level=None), or let it "
             "begin them: `aiosqlite.connect(..., isolation_level='IMMEDIATE')`")


class AiosqliteHandle(AsyncConnectionHandle):
    def __init__(self, connection: Any, no_transaction: str | None) -> None:
        super().__init__("aiosqlite connection", "sqlite", no_transaction, immediate=IMMEDIATE)
        self.connection = connection

    async def run(self, sql: str, params: Sequence[Any], wants: str | None) -> Any:
        async with self.connection.execute(sql, tuple(params)) as cursor:
            return await cursor.fetchall() if wants == "rows" else None


async def adapt(handle: Any, runtime: Runtime) -> AiosqliteHandle:
    reason = None
    if handle.isolation_level is None and not handle.in_transaction:
        reason = ("the aiosqlite connection is in autocommit mode with no transaction open, so the task would "
                  "commit on its own: execute BEGIN on it first, or submit on GTA's own connection")
    await install_clock_functions(handle)
    return AiosqliteHandle(handle, reason)


async def install_clock_functions(connection: Any) -> None:
    """The functions GTA's SQLite statements call (the clock, ``gta_now()``, and the mark of the
    ids handed out, `sqlite_ids`), on an aiosqlite connection."""
    database = borrowed_database("sqlite")
    install_sqlite_functions(database)
    for name, (function, arity, deterministic) in database._functions.items():  # type: ignore[attr-defined]
        if name.startswith("gta_"):
            await connection.create_function(name, arity, function, deterministic=bool(deterministic))
