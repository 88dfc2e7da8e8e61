"""asyncpg connections (or a pool's ``acquire()``), inside ``async with conn.transaction():``.

Outside ``transaction()`` asyncpg commits every statement at once, so a submit there is
refused. Statements take ``$1`` placeholders and are prepared and cached by asyncpg, as the
hot ones are by GTA's own PostgreSQL connection. asyncpg has no commit hook and needs none:
the ``NOTIFY`` inside the insert is delivered when the transaction commits, and never if it
rolls back.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..runtime import Runtime
from .async_connection import AsyncConnectionHandle


class AsyncpgHandle(AsyncConnectionHandle):
    def __init__(self, connection: Any, no_transaction: str | None) -> None:
        super().__init__("asyncpg connection", "postgres", no_transaction, numbered=True)
        self.connection = connection

    async def run(self, sql: str, params: Sequence[Any], wants: str | None) -> Any:
        if wants == "rows":
            return await self.connection.fetch(sql, *params)
        await self.connection.execute(sql, *params)
        return None


async def adapt(handle: Any, runtime: Runtime) -> AsyncpgHandle:
    reason = None
    if not handle.is_in_transaction():
        reason = ("the asyncpg connection has no transaction open, so the task would commit on its own: "
                  "submit inside `async with connection.transaction():`, or on GTA's own connection")
    return AsyncpgHandle(handle, reason)
