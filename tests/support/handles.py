"""The application side of a transaction, one class per kind of handle GTA accepts: what a
caller holds, how it commits, rolls back and opens a savepoint. Shared by the handle tests."""
from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlparse

import psycopg
import psycopg2
import pymysql
import sqlalchemy
from sqlalchemy.orm import Session


class Caller:
    """One open transaction of the application's own, of some kind."""

    handle: Any

    def commit(self) -> None:
        raise NotImplementedError

    def rollback(self) -> None:
        raise NotImplementedError

    def savepoint(self) -> contextlib.AbstractContextManager[Any]:
        """A nested transaction: rolled back when its block raises, kept otherwise."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class DBAPICaller(Caller):
    def __init__(self, connection: Any) -> None:
        self.handle = connection

    def commit(self) -> None:
        self.handle.commit()

    def rollback(self) -> None:
        self.handle.rollback()

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        cursor = self.handle.cursor()
        cursor.execute("SAVEPOINT app")
        try:
            yield
        except BaseException:
            cursor.execute("ROLLBACK TO SAVEPOINT app")
            raise
        cursor.execute("RELEASE SAVEPOINT app")

    def close(self) -> None:
        self.handle.close()


class SQLAlchemyCaller(Caller):
    def __init__(self, url: str, session: bool) -> None:
        self.engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        self.handle = Session(self.engine) if session else self.engine.connect()

    def commit(self) -> None:
        self.handle.commit()

    def rollback(self) -> None:
        self.handle.rollback()

    def savepoint(self) -> contextlib.AbstractContextManager[Any]:
        return self.handle.begin_nested()  # type: ignore[no-any-return]

    def close(self) -> None:
        self.handle.close()
        self.engine.dispose()


class DjangoCaller(Caller):
    """``with transaction.atomic(using=alias):`` entered by hand; the handle is the connection."""

    def __init__(self, alias: str, proxy: bool = False) -> None:
        from django.db import connection, connections, transaction
        self.alias = alias
        self.handle = connection if proxy else connections[alias]
        self.atomic = transaction.atomic(using=alias)
        self.atomic.__enter__()

    def commit(self) -> None:
        self.atomic.__exit__(None, None, None)

    def rollback(self) -> None:
        from django.db import transaction
        transaction.set_rollback(True, using=self.alias)
        self.atomic.__exit__(None, None, None)

    def savepoint(self) -> contextlib.AbstractContextManager[Any]:
        from django.db import transaction
        return transaction.atomic(using=self.alias)

    def close(self) -> None:
        from django.db import connections
        connections[self.alias].close()


def mysql_params(url: str) -> dict[str, Any]:
    parsed = urlparse(url)
    return {"host": parsed.hostname, "port": parsed.port or 3306, "user": parsed.username,
            "password": parsed.password or "", "database": parsed.path.lstrip("/")}


def sqlite_path(url: str) -> str:
    return url.split("://", 1)[1][1:]


#: kinds of handle per backend: name → what opens a `Caller` on the database at a GTA URL
KINDS: dict[str, dict[str, Callable[[str], Caller]]] = {
    "sqlite": {
        "sqlite3": lambda url: DBAPICaller(sqlite3.connect(sqlite_path(url), timeout=30)),
        "sqlalchemy-connection": lambda url: SQLAlchemyCaller(f"sqlite:///{sqlite_path(url)}", session=False),
        "sqlalchemy-session": lambda url: SQLAlchemyCaller(f"sqlite:///{sqlite_path(url)}", session=True),
        "django": lambda url: DjangoCaller(django_alias("sqlite", url)),
    },
    "postgres": {
        "psycopg2": lambda url: DBAPICaller(psycopg2.connect(url)),
        "psycopg": lambda url: DBAPICaller(psycopg.connect(url)),
        "sqlalchemy-connection": lambda url: SQLAlchemyCaller(url.replace("postgresql:", "postgresql+psycopg2:"),
                                                              session=False),
        "sqlalchemy-session": lambda url: SQLAlchemyCaller(url.replace("postgresql:", "postgresql+psycopg:"),
                                                           session=True),
        "django": lambda url: DjangoCaller(django_alias("postgres", url)),
    },
    "mariadb": {
        "pymysql": lambda url: DBAPICaller(pymysql.connect(**mysql_params(url))),
        "sqlalchemy-connection": lambda url: SQLAlchemyCaller(url.replace("mysql:", "mysql+pymysql:"),
                                                              session=False),
        "sqlalchemy-session": lambda url: SQLAlchemyCaller(url.replace("mysql:", "mysql+pymysql:"), session=True),
        "django": lambda url: DjangoCaller(django_alias("mariadb", url)),
    },
}


def django_alias(backend: str, url: str) -> str:
    """Django set up once per process (`tests.handlers.django_app.settings`), with an alias for
    ``backend`` pointed at ``url`` ("default" for SQLite, the test's own file); the alias."""
    alias = "default" if backend == "sqlite" else backend
    use_django_database(alias, url)
    return alias


def use_django_database(alias: str, url: str) -> None:
    """Point Django's ``alias`` at the database of a GTA URL (closing what it had open)."""
    import django
    from django.apps import apps
    from django.db import connections

    from ..handlers.django_app.settings import database_settings
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.handlers.django_app.settings")
    if not apps.ready:
        django.setup()
    with contextlib.suppress(AttributeError):
        getattr(connections._connections, alias).close()
        delattr(connections._connections, alias)
    connections.settings[alias] = {**connections.settings["default"], "USER": "", "PASSWORD": "", "HOST": "",
                                   "PORT": "", "OPTIONS": {}, **database_settings(url)}
