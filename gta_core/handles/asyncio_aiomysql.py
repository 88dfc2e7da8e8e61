"""aiomysql connections (or a pool's ``acquire()``), inside their open transaction.

aiomysql opens connections with autocommit off, so the first statement begins a transaction
that the caller's ``await conn.commit()`` ends; with autocommit on and no ``await conn.begin()``
each statement would commit alone, and the submit is refused. aiomysql has no commit hook:
the supervisor finds the task by its next poll, as for a pymysql connection.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..runtime import Runtime
from .async_connection import AsyncConnectionHandle
from .dbapi import SERVER_STATUS_IN_TRANS


class AiomysqlHandle(AsyncConnectionHandle):
    def __init__(self, connection: Any, no_transaction: str | None) -> None:
        mariadb = "mariadb" in str(connection.get_server_info()).lower()  # MySQL 8 has no INSERT … RETURNING
        super().__init__("aiomysql connection", "mysql", no_transaction, returns_ids=mariadb)
        self.connection = connection

    async def run(self, sql: str, params: Sequence[Any], wants: str | None) -> Any:
        async with self.connection.cursor() as cursor:
            await cursor.execute(sql, tuple(params))
            if wants == "lastrowid":
                return cursor.lastrowid
            return await cursor.fetchall() if wants == "rows" else None


async def adapt(handle: Any, runtime: Runtime) -> AiomysqlHandle:
    reason = None
    if handle.get_autocommit() and not handle.server_status & SERVER_STATUS_IN_TRANS:
        reason = ("the aiomysql connection is in autocommit mode with no transaction open, so the task would "
                  "commit on its own: `await conn.begin()` first, or submit on GTA's own connection")
    return AiomysqlHandle(handle, reason)
