"""SQLite's one writer at a time, as the application's own transactions meet it (issue 35).

A transaction begun DEFERRED that has read cannot wait for the write lock: SQLite refuses its
first write at once. So a submit must never read before its insert on the caller's connection
(it would make a transaction that had not read into one that cannot wait), a submit refused
that way raises `gta_core.DatabaseLocked` naming the fix for the handle in hand (nothing
written, the transaction left to its owner), and `gta_core.transaction(db)` begins IMMEDIATE.
Each kind of handle that can be on SQLite is tried, sync and async.
"""
from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import peewee
import pytest

import gta_core
from benchmarks.sqlite_writers import APP_TABLE, READ, create_app_table
from gta_core.db.sqlite_locks import busy_error

from ..support.handles import sqlite_path, use_django_database
from ..support.helpers import Env

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])
#: how long another connection holds the write lock while a submit waits for it
HELD = 0.4


class Boom(Exception):
    """Raised to roll a transaction back."""


class Deferred:
    """A transaction of the application's on SQLite, begun DEFERRED (its framework's default, or
    a plain ``BEGIN``), of one kind of handle: read the application's table, submit, roll back."""

    #: what the application passes to GTA
    handle: Any
    #: what `gta_core.DatabaseLocked` names as the fix for this kind of handle
    fix = ""

    def read(self) -> None:
        raise NotImplementedError

    def submit(self, n: int) -> int:
        return gta_core.submit(self.handle, "record", {"n": n})

    def rollback(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class PeeweeDeferred(Deferred):
    fix = "`with gta_core.transaction(db) as tx:`"

    def __init__(self, path: str) -> None:
        self.db = peewee.SqliteDatabase(path, timeout=5)
        self.atomic = self.db.atomic()
        self.handle = self.atomic.__enter__()

    def read(self) -> None:
        self.db.execute_sql(READ).fetchone()

    def rollback(self) -> None:
        self.atomic.__exit__(Boom, Boom(), None)

    def close(self) -> None:
        self.db.close()


class Sqlite3Deferred(Deferred):
    fix = "isolation_level='IMMEDIATE'"

    def __init__(self, path: str) -> None:
        self.handle = sqlite3.connect(path, isolation_level=None, timeout=5, check_same_thread=False)
        self.handle.execute("BEGIN")

    def read(self) -> None:
        self.handle.execute(READ).fetchone()

    def rollback(self) -> None:
        self.handle.execute("ROLLBACK")

    def close(self) -> None:
        self.handle.close()


def sqlite_begins(engine: Any, begin: str) -> None:
    """docs/integrations.md's SQLite engine: SQLAlchemy emits ``begin`` itself (here a plain,
    deferred ``BEGIN``; the docs say ``BEGIN IMMEDIATE``), the driver's own BEGIN turned off."""
    from sqlalchemy import event
    event.listen(engine, "connect", lambda dbapi_connection, record: setattr(dbapi_connection, "isolation_level", None))
    event.listen(engine, "begin", lambda connection: connection.exec_driver_sql(begin))


class SQLAlchemyDeferred(Deferred):
    fix = '"begin" event'

    def __init__(self, path: str, session: bool) -> None:
        from sqlalchemy import create_engine, pool
        from sqlalchemy.orm import Session
        self.engine = create_engine(f"sqlite:///{path}", poolclass=pool.NullPool)
        sqlite_begins(self.engine, "BEGIN")
        self.handle = Session(self.engine) if session else self.engine.connect()

    def read(self) -> None:
        from sqlalchemy import text
        self.handle.execute(text(READ)).scalar()

    def rollback(self) -> None:
        self.handle.rollback()

    def close(self) -> None:
        self.handle.close()
        self.engine.dispose()


class DjangoDeferred(Deferred):
    """Inside ``transaction.atomic()`` with Django's default ``transaction_mode`` (deferred)."""

    fix = "DATABASES['default']['OPTIONS']['transaction_mode'] = 'IMMEDIATE'"

    def __init__(self, url: str) -> None:
        from django.db import connections, transaction
        use_django_database("default", url)
        connections.settings["default"]["OPTIONS"] = {}
        self.handle = connections["default"]
        self.atomic = transaction.atomic()
        self.atomic.__enter__()

    def read(self) -> None:
        with self.handle.cursor() as cursor:
            cursor.execute(READ)
            cursor.fetchone()

    def rollback(self) -> None:
        self.atomic.__exit__(Boom, Boom(), None)

    def close(self) -> None:
        self.handle.close()


class AsyncDeferred(Deferred):
    """An async handle, driven from the test on an event loop of its own (`asubmit`)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def submit(self, n: int) -> int:
        return self.run(gta_core.asubmit(self.handle, "record", {"n": n}))  # type: ignore[no-any-return]

    def close(self) -> None:
        self.run(self.aclose())
        self.loop.close()

    async def aclose(self) -> None:
        raise NotImplementedError


class AiosqliteDeferred(AsyncDeferred):
    fix = "aiosqlite.connect(..., isolation_level='IMMEDIATE')"

    def __init__(self, path: str) -> None:
        import aiosqlite
        super().__init__()
        self.handle = self.run(aiosqlite.connect(path, isolation_level=None, timeout=5))
        self.run(self.handle.execute("BEGIN"))

    def read(self) -> None:
        self.run(self.handle.execute_fetchall(READ))

    def rollback(self) -> None:
        self.run(self.handle.execute("ROLLBACK"))

    async def aclose(self) -> None:
        await self.handle.close()


class SQLAlchemyAsyncDeferred(AsyncDeferred):
    fix = "`engine.sync_engine`"

    def __init__(self, path: str) -> None:
        from sqlalchemy import pool
        from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
        super().__init__()
        self.engine = create_async_engine(f"sqlite+aiosqlite:///{path}", poolclass=pool.NullPool)
        sqlite_begins(self.engine.sync_engine, "BEGIN")
        self.handle = AsyncSession(self.engine)

    def read(self) -> None:
        from sqlalchemy import text
        self.run(self.handle.execute(text(READ)))

    def rollback(self) -> None:
        self.run(self.handle.rollback())

    async def aclose(self) -> None:
        await self.handle.close()
        await self.engine.dispose()


KINDS: dict[str, Callable[[str], Deferred]] = {
    "peewee": lambda url: PeeweeDeferred(sqlite_path(url)),
    "sqlite3": lambda url: Sqlite3Deferred(sqlite_path(url)),
    "sqlalchemy-session": lambda url: SQLAlchemyDeferred(sqlite_path(url), session=True),
    "sqlalchemy-connection": lambda url: SQLAlchemyDeferred(sqlite_path(url), session=False),
    "django": DjangoDeferred,
    "aiosqlite": lambda url: AiosqliteDeferred(sqlite_path(url)),
    "sqlalchemy-async-session": lambda url: SQLAlchemyAsyncDeferred(sqlite_path(url)),
}


@pytest.fixture(params=list(KINDS))
def deferred(env: Env, request: pytest.FixtureRequest) -> Iterator[Callable[[], Deferred]]:
    """Opens deferred transactions of the kind under test on the env's file (with the
    application's table in it); closes them after."""
    create_app_table(sqlite_path(env.db_url))
    opened: list[Deferred] = []

    def open_one() -> Deferred:
        opened.append(KINDS[request.param](env.db_url))
        return opened[-1]
    yield open_one
    for caller in opened:
        caller.close()


@contextlib.contextmanager
def write_lock_held(path: str, seconds: float) -> Iterator[None]:
    """Another connection writes and holds SQLite's write lock for ``seconds``, then commits."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute(f"INSERT INTO {APP_TABLE} (note) VALUES ('another process')")
    timer = threading.Timer(seconds, lambda: holder.execute("COMMIT"))
    timer.start()
    try:
        yield
    finally:
        timer.join()
        holder.close()


def another_process_writes(path: str) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute(f"INSERT INTO {APP_TABLE} (note) VALUES ('another process')")
    connection.close()


def test_a_submit_reads_nothing_before_its_insert(env: Env, deferred: Callable[[], Deferred]) -> None:
    """A deferred transaction that has not read can wait for the write lock at its first write.
    The submit is that first write: had GTA read before its insert (its check of the database),
    the transaction would have taken a snapshot there and been refused at once."""
    caller = deferred()
    with write_lock_held(sqlite_path(env.db_url), HELD):
        started = time.monotonic()
        task_id = caller.submit(1)
        waited = time.monotonic() - started
    assert waited > HELD / 2  # it waited for the other writer, with the busy timeout
    caller.read()  # the transaction goes on
    second = caller.submit(2)
    caller.rollback()
    assert env.statuses([task_id, second]) == {}


def test_a_deferred_transaction_that_read_gets_database_locked_naming_the_fix(
        env: Env, deferred: Callable[[], Deferred]) -> None:
    caller = deferred()
    caller.read()
    another_process_writes(sqlite_path(env.db_url))  # its snapshot is stale now
    with pytest.raises(gta_core.DatabaseLocked) as info:
        caller.submit(1)
    message = str(info.value)
    assert "SQLite refused at once" in message and "began DEFERRED and read first" in message, message
    assert "Nothing was written" in message and "IMMEDIATE" in message and caller.fix in message, message
    if sys.version_info >= (3, 11):  # sqlite3 errors carry their extended code from 3.11 on
        assert "SQLITE_BUSY_SNAPSHOT" in message, message
    assert busy_error(info.value.__cause__) is not None  # the driver's error is chained
    caller.rollback()  # the transaction was left to its owner, who can end it
    assert env.store.counts() == {}
    fresh = deferred()
    task_id = fresh.submit(3)  # the connection's next transaction works
    fresh.rollback()
    assert env.statuses([task_id]) == {}


def test_a_write_lock_held_while_a_read_transaction_submits(env: Env, deferred: Callable[[], Deferred]) -> None:
    """SQLITE_BUSY, not a stale snapshot: the other writer is still at it, and SQLite will not let
    a transaction that has read wait for it, whatever the busy timeout."""
    caller = deferred()
    caller.read()
    with write_lock_held(sqlite_path(env.db_url), HELD):
        started = time.monotonic()
        with pytest.raises(gta_core.DatabaseLocked, match=r"holds the write lock \(SQLITE_BUSY\)") as info:
            caller.submit(1)
        assert time.monotonic() - started < HELD / 2  # refused at once
    assert caller.fix in str(info.value)
    caller.rollback()
    assert env.store.counts() == {}


@pytest.mark.parametrize("deferred", ["sqlite3"], indirect=True)
def test_a_write_lock_held_past_the_busy_timeout_is_named_as_such(env: Env, deferred: Callable[[], Deferred]) -> None:
    caller = deferred()
    caller.handle.execute("PRAGMA busy_timeout = 200")
    with write_lock_held(sqlite_path(env.db_url), 1.0):
        with pytest.raises(gta_core.DatabaseLocked) as info:
            caller.submit(1)
    message = str(info.value)
    assert "stayed taken longer than the sqlite3 connection waits for it (its busy timeout, 0.2 s" in message
    assert "move to PostgreSQL" in message and "IMMEDIATE" not in message
    caller.rollback()
    assert env.store.counts() == {}


def test_gta_transaction_begins_immediate(env: Env) -> None:
    """``gta_core.transaction(db)`` on the application's own peewee SqliteDatabase waits for
    the write lock at BEGIN, so reading before submitting is safe while another process writes."""
    path = sqlite_path(env.db_url)
    create_app_table(path)
    app_db = peewee.SqliteDatabase(path, timeout=5)
    try:
        with write_lock_held(path, HELD):
            started = time.monotonic()
            with gta_core.transaction(app_db) as tx:
                assert time.monotonic() - started > HELD / 2  # it waited at BEGIN
                app_db.execute_sql(READ).fetchone()
                first = gta_core.submit(tx, "record", {"n": 1})
                with gta_core.transaction(app_db) as inner:  # nested: a savepoint
                    second = gta_core.submit(inner, "record", {"n": 2})
        assert env.statuses([first, second]) == {first: "pending", second: "pending"}
    finally:
        app_db.close()
