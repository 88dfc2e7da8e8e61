"""SQLAlchemy 2.x handles: a `Session` (or a `scoped_session`, as Flask-SQLAlchemy's
``db.session``) or a `Connection`, written through the connection of their transaction.

Both begin a transaction on first use ("autobegin"), and so does a submit: the task is then
committed or rolled back with the session's or connection's own writes, and a rolled-back
``begin_nested()`` savepoint takes its tasks with it. A connection in ``AUTOCOMMIT``
isolation is refused (see `gta_core.handles.dbapi`). The wake-up is sent by the session's
``after_commit`` event, or the connection's ``commit`` event.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, scoped_session

from ..errors import SubmitError
from ..runtime import Runtime
from . import KINDS
from .connection import ConnectionHandle
from .dbapi import autocommitting

DIALECTS = {"sqlite": "sqlite", "postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}
#: how a SQLAlchemy engine's transactions begin IMMEDIATE on SQLite (`gta_core.db.sqlite_locks`)
IMMEDIATE = ("let the engine emit it from its \"begin\" event (`conn.exec_driver_sql('BEGIN IMMEDIATE')`), with "
             "the driver's own BEGIN turned off in its \"connect\" event (`dbapi_connection.isolation_level = None`)")


def adapt(handle: Any, runtime: Runtime) -> ConnectionHandle:
    if isinstance(handle, scoped_session):
        handle = handle()
    if isinstance(handle, Session):
        kind, connection = "SQLAlchemy Session", handle.connection()  # begins the session's transaction

        def on_commit(fn: Callable[[], None]) -> None:
            event.listen(handle, "after_commit", lambda session: fn(), once=True)
    elif isinstance(handle, Connection):
        kind, connection = "SQLAlchemy Connection", handle
        if not connection.in_transaction():
            connection.begin()  # what its own next statement would do; its commit() ends it

        def on_commit(fn: Callable[[], None]) -> None:
            event.listen(connection, "commit", lambda conn: fn(), once=True)
    else:
        raise SubmitError(f"db_tx must be {KINDS}; got {type(handle).__name__}")
    dialect = DIALECTS.get(connection.dialect.name, connection.dialect.name)
    raw = connection.connection.dbapi_connection
    reason = None
    if autocommitting(raw):
        reason = (f"the {kind} is in AUTOCOMMIT isolation, so the task would commit on its own: "
                  "use a transactional connection, or submit on GTA's own connection")
    return ConnectionHandle(kind, dialect, raw, reason, on_commit, IMMEDIATE)
