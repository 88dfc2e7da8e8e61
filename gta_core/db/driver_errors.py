"""Telling transient database failures from real ones, across drivers: a conflict worth
trying again (`is_retryable`), a connection that is gone (`is_disconnect`), a missing table;
and the GTA error each kind of driver error is to the caller of a public function (`as_gta_error`).
Driver errors arrive wrapped by peewee (SQLAlchemy and Django wrap them too); `driver_error`
unwraps them.
"""
from __future__ import annotations

import peewee

from ..errors import DatabaseError, DatabaseLocked, DatabaseUnavailable, GTAError, SchemaError
from .sqlite_locks import busy_error

#: MySQL/MariaDB errors worth retrying at once: deadlock and lock wait timeout.
MYSQL_RETRYABLE = {1213, 1205}
#: MySQL/MariaDB client errors that mean the connection is gone.
MYSQL_DISCONNECTED = {2003, 2006, 2013, 2055, 1927, 1053, 4031}


#: the packages whose exceptions are a database driver's (peewee's wrap them); SQLAlchemy's and
#: Django's wrappers are told by their classes (`is_driver_error`)
DRIVER_PACKAGES = frozenset({"peewee", "sqlite3", "_sqlite3", "psycopg2", "psycopg", "pymysql", "MySQLdb",
                             "asyncpg", "aiomysql", "aiosqlite"})
WRAPPER_CLASSES = frozenset({("sqlalchemy.exc", "DBAPIError"), ("django.db.utils", "Error")})


def driver_error(exc: BaseException) -> BaseException:
    """The driver's own error inside a wrapper: peewee's ``WrappedError(original, *original.args)``,
    SQLAlchemy's ``DBAPIError.orig``, Django's (raised ``from`` the driver's)."""
    if exc.args and isinstance(exc.args[0], BaseException):
        return exc.args[0]
    if any((cls.__module__, cls.__name__) in WRAPPER_CLASSES for cls in type(exc).__mro__):
        original = getattr(exc, "orig", None) or exc.__cause__
        if isinstance(original, BaseException):
            return original
    return exc


def is_driver_error(exc: BaseException) -> bool:
    """Whether a database driver (or peewee, SQLAlchemy or Django wrapping one) raised ``exc``."""
    return any(cls.__module__.partition(".")[0] in DRIVER_PACKAGES or (cls.__module__, cls.__name__) in WRAPPER_CLASSES
               for cls in type(exc).__mro__)


def sqlstate(exc: BaseException) -> str | None:
    """PostgreSQL's SQLSTATE of an error: psycopg2's ``pgcode``, psycopg's and asyncpg's ``sqlstate``."""
    original = driver_error(exc)
    for candidate in (original, getattr(exc, "orig", None)):
        code = getattr(candidate, "pgcode", None) or getattr(candidate, "sqlstate", None)
        if isinstance(code, str):
            return code
    return None


def first_line(exc: BaseException) -> str:
    """The driver's message, first line (its type's name when it has none)."""
    original = driver_error(exc)
    lines = str(original).strip().splitlines()
    return lines[0] if lines else type(original).__name__


def as_gta_error(exc: BaseException) -> GTAError | None:
    """What a driver's error means to the caller of a public function, one class per kind, or
    None for an exception that is not a driver's: `DatabaseUnavailable` (the connection cannot
    be made or was lost), `DatabaseLocked` (SQLite's "database is locked"), `SchemaError` (a
    table of GTA's is missing: run ``gta migrate``), or `DatabaseError` (any other failure)."""
    if not is_driver_error(exc):
        return None
    reason = first_line(exc)
    if is_disconnect(exc):
        return DatabaseUnavailable(f"the database cannot be reached: {reason}")
    if busy_error(exc) is not None:
        return DatabaseLocked(f"SQLite's write lock stayed taken by another connection ({reason}): nothing was "
                              "written; run it again, keep write transactions short or begin them IMMEDIATE")
    if is_missing_table(exc):
        return SchemaError(f"a table of GTA's is missing ({reason}): run `gta migrate`")
    return DatabaseError(f"the database failed: {reason}")


def mysql_code(exc: BaseException) -> int | None:
    original = driver_error(exc)
    if original.args and isinstance(original.args[0], int):
        return original.args[0]
    return None


def is_missing_table(exc: BaseException, table: str | None = None) -> bool:
    """Whether a statement failed because a table (``table``, when given) does not exist
    (PostgreSQL SQLSTATE 42P01, MySQL/MariaDB error 1146, SQLite "no such table")."""
    text = str(driver_error(exc))
    missing = sqlstate(exc) == "42P01" or mysql_code(exc) == 1146 or "no such table" in text
    return missing and (table is None or table in text)


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
    if isinstance(exc, peewee.InterfaceError) or (sqlstate(exc) or "").startswith("08"):  # connection exception
        return True
    if mysql_code(exc) in MYSQL_DISCONNECTED:
        return True
    text = str(driver_error(exc)).lower()
    return any(marker in text for marker in (
        "server closed the connection", "connection already closed", "terminating connection",
        "could not connect", "connection refused", "connection timed out", "ssl connection has been closed",
        "no connection to the server", "server has gone away", "lost connection", "can't connect",
        "broken pipe", "connection reset", "the database system is", "canceling statement due to statement timeout",
        "unable to open database file", "connection is closed", "connection was closed",
    ))


def session_not_ours(exc: BaseException) -> bool:
    """Whether PostgreSQL refused an ``EXECUTE`` naming no prepared statement (SQLSTATE 26000)
    or a ``PREPARE`` of a name the session already has (42P05): the session forgot what this
    connection prepared, or is shared with other connections (a pooler in transaction mode
    gives each transaction whichever server session is free, one another client prepared on)."""
    return sqlstate(exc) in ("26000", "42P05")
