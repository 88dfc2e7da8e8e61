"""psycopg 3 ``AsyncConnection``, inside its open transaction (a synchronous psycopg
``Connection`` is left to `gta_core.handles.dbapi`).

Outside autocommit mode the first statement begins a transaction, which the caller's
``await conn.commit()`` ends with the task in it; in autocommit mode with no
``conn.transaction()`` block open each statement would commit alone, and the submit is
refused. No commit hook is needed: the insert's ``NOTIFY`` is delivered at commit.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from ..runtime import Runtime
from .async_connection import AsyncConnectionHandle
from .dbapi import autocommitting


class PsycopgAsyncHandle(AsyncConnectionHandle):
    def __init__(self, connection: psycopg.AsyncConnection[Any], no_transaction: str | None) -> None:
        super().__init__("psycopg AsyncConnection", "postgres", no_transaction)
        self.connection = connection

    async def run(self, sql: str, params: Sequence[Any], wants: str | None) -> Any:
        async with self.connection.cursor() as cursor:
            await cursor.execute(sql, params)
            return await cursor.fetchall() if wants == "rows" else None


async def adapt(handle: Any, runtime: Runtime) -> PsycopgAsyncHandle | None:
    if not isinstance(handle, psycopg.AsyncConnection):
        return None  # a sync psycopg connection: `submit`'s
    reason = None
    if autocommitting(handle):
        reason = ("the psycopg AsyncConnection is in autocommit mode with no transaction open, so the task "
                  "would commit on its own: submit inside `async with conn.transaction():`, or on GTA's own "
                  "connection")
    return PsycopgAsyncHandle(handle, reason)
