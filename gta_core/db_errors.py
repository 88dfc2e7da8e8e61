"""Telling transient database failures from real ones, across drivers: a conflict worth
trying again (`is_retryable`), a connection that is gone (`is_disconnect`), a missing table.
Driver errors arrive wrapped by peewee; `driver_error` unwraps them.
"""
from __future__ import annotations

import peewee

#: MySQL/MariaDB errors worth retrying at once: deadlock and lock wait timeout.
MYSQL_RETRYABLE = {1213, 1205}
#: MySQL/MariaDB client errors that mean the connection is gone.
MYSQL_DISCONNECTED = {2003, 2006, 2013, 2055, 1927, 1053, 4031}


def driver_error(exc: BaseException) -> BaseException:
    # peewee wraps driver errors as WrappedError(original, *original.args)
    if exc.args and isinstance(exc.args[0], BaseException):
        return exc.args[0]
    return exc


def mysql_code(exc: BaseException) -> int | None:
    original = driver_error(exc)
    if original.args and isinstance(original.args[0], int):
        return original.args[0]
    return None


def is_missing_table(exc: BaseException, table: str) -> bool:
    """Whether a statement failed because ``table`` does not exist (PostgreSQL SQLSTATE 42P01,
    MySQL/MariaDB error 1146, SQLite "no such table")."""
    text = str(driver_error(exc))
    missing = (getattr(getattr(exc, "orig", None), "pgcode", None) == "42P01" or mysql_code(exc) == 1146
               or "no such table" in text)
    return missing and table in text


def is_retryable(exc: BaseException) -> bool:
    """A conflict that a fresh attempt of the same transaction will most likely get past."""
    if mysql_code(exc) in MYSQL_RETRYABLE:
        return True
    if session_not_ours(exc):
        return True  # prepared statements do not hold in this session: the database now runs them unprepared
    text = str(driver_error(exc)).lower()
    return "database is locked" in text or "deadlock detected" in text or "could not serialize" in text


def is_disconnect(exc: BaseException) -> bool:
    """The connection is gone (server restart, killed session, network): reopen it."""
    if isinstance(exc, peewee.InterfaceError):
        return True
    if mysql_code(exc) in MYSQL_DISCONNECTED:
        return True
    text = str(driver_error(exc)).lower()
    return any(marker in text for marker in (
        "server closed the connection", "connection already closed", "terminating connection",
        "could not connect", "connection refused", "connection timed out", "ssl connection has been closed",
        "no connection to the server", "server has gone away", "lost connection", "can't connect",
        "broken pipe", "connection reset", "the database system is", "canceling statement due to statement timeout",
        "unable to open database file",
    ))


def session_not_ours(exc: BaseException) -> bool:
    """Whether PostgreSQL refused an ``EXECUTE`` naming no prepared statement (SQLSTATE 26000)
    or a ``PREPARE`` of a name the session already has (42P05): the session forgot what this
    connection prepared, or is shared with other connections (a pooler in transaction mode
    gives each transaction whichever server session is free, one another client prepared on)."""
    return getattr(getattr(exc, "orig", None), "pgcode", None) in ("26000", "42P05")
