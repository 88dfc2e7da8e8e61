"""PEP 249 connections (sqlite3, psycopg2, psycopg 3, pymysql), inside their open transaction.

Outside autocommit mode a DB-API connection is always in a transaction (the first statement
begins one), so the task is committed by the caller's ``commit()`` with the rest. In
autocommit mode with no transaction begun, each statement would commit on its own: the
submit is refused, as the task's one promise (it exists if and only if the caller's writes
commit) could not hold. A plain connection has no commit hook: on SQLite and MySQL the
supervisor finds the task by its next poll; on PostgreSQL ``NOTIFY`` wakes it at commit.
"""
from __future__ import annotations

from typing import Any

from ..runtime import Runtime
from .connection import ConnectionHandle

DIALECTS = {"sqlite3": "sqlite", "psycopg2": "postgres", "psycopg": "postgres", "pymysql": "mysql"}
#: how a sqlite3 connection's transactions begin IMMEDIATE (`gta_core.db.sqlite_locks`)
IMMEDIATE = ("execute `BEGIN IMMEDIATE` instead of `BEGIN` (with isolation_level=None), or let sqlite3 begin "
             "them: `sqlite3.connect(..., isolation_level='IMMEDIATE')`")
#: MySQL's server status flag: a transaction is open
SERVER_STATUS_IN_TRANS = 1
IDLE = 0  # transaction status of psycopg2 and psycopg: no transaction open


def adapt(handle: Any, runtime: Runtime) -> ConnectionHandle:
    driver = type(handle).__module__.partition(".")[0]
    kind = f"{driver} connection"
    reason = None
    if autocommitting(handle):
        reason = (f"the {kind} is in autocommit mode with no transaction open, so the task would commit "
                  "on its own: begin a transaction on it first, or submit on GTA's own connection")
    return ConnectionHandle(kind, DIALECTS[driver], handle, reason, immediate=IMMEDIATE)


def autocommitting(connection: Any) -> bool:
    """True when a statement sent on ``connection`` now would commit at once: autocommit mode,
    and no transaction begun explicitly (``BEGIN``)."""
    driver = type(connection).__module__.partition(".")[0]
    if driver == "sqlite3":
        return connection.isolation_level is None and not connection.in_transaction
    if driver == "pymysql":
        return bool(connection.get_autocommit()) and not connection.server_status & SERVER_STATUS_IN_TRANS
    return bool(connection.autocommit) and connection.info.transaction_status == IDLE
