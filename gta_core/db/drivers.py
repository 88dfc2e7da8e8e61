"""Keeping peewee from importing database drivers that a supervisor's child never uses.

peewee imports every driver it can find (sqlite3, psycopg2, psycopg 3, PyMySQL) the first time
it is imported; together they take some 18 MB, close to half of a worker's memory. A supervisor
knows its database, so it names the dialect in ``GTA_DRIVER_DIALECT`` for the processes it
starts (workers and the metrics sidecar), and `gta_core` imports peewee there with only that
dialect's driver visible. The variable is consumed on import, so a handler's own subprocesses
see every driver again; in the worker itself, peewee can open databases of that dialect only.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys

from ..errors import DriverMissing

ENV = "GTA_DRIVER_DIALECT"
#: per dialect: its name for people, the modules GTA can use (any one will do), and the
#: extra (pyproject.toml) that installs one
INSTALLABLE = {
    "postgres": ("PostgreSQL", ("psycopg2",), "postgres"),
    "mysql": ("MySQL/MariaDB", ("pymysql", "MySQLdb"), "mysql"),
}
#: every driver module peewee tries to import when it is imported
PEEWEE_DRIVERS = ("pysqlite3", "sqlite3", "psycopg2", "psycopg", "pymysql", "MySQLdb")


def needed_by(dialect: str) -> set[str]:
    """The driver modules peewee uses for ``dialect``."""
    if dialect == "postgres":  # peewee prefers psycopg2 and falls back to psycopg 3
        return {"psycopg2"} if _installed("psycopg2") else {"psycopg"}
    if dialect == "mysql":
        return {"pymysql", "MySQLdb"}
    return {"pysqlite3", "sqlite3"}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # an import hook that refuses the name says the same
        return False


def require_driver(dialect: str) -> None:
    """Raise `DriverMissing`, naming the extra to install, when no driver ``dialect`` can use
    imports: one clear line instead of a traceback at the first connection."""
    if dialect not in INSTALLABLE:
        return
    name, modules, extra = INSTALLABLE[dialect]
    for module in modules:
        try:
            importlib.import_module(module)
            return
        except ImportError:
            continue
    raise DriverMissing(f"the {name} driver ({' or '.join(modules)}) is not installed: "
                        f"pip install 'gta[{extra}]'")


def import_peewee_for(dialect: str) -> None:
    """Import peewee now, with the drivers ``dialect`` does not need hidden from it."""
    hidden = [name for name in PEEWEE_DRIVERS if name not in needed_by(dialect) and name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # ``import name`` now raises ImportError
    try:
        importlib.import_module("peewee")
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def limit_to_environment() -> None:
    """Apply (and consume) ``GTA_DRIVER_DIALECT``, if this process has not imported peewee yet."""
    dialect = os.environ.pop(ENV, None)
    if dialect in ("sqlite", "postgres", "mysql") and "peewee" not in sys.modules:
        import_peewee_for(dialect)


limit_to_environment()  # on import: `gta_core` imports this module before anything imports peewee
