"""`asubmit` through the application's async transaction handles (asyncpg, psycopg 3
``AsyncConnection``, aiomysql, SQLAlchemy ``AsyncSession``/``AsyncConnection`` on asyncpg,
psycopg, aiomysql and aiosqlite): the task exists if and only if that transaction commits,
bad input raises before anything is written, the commit wakes a running supervisor, a handle
with no transaction open is refused, and eager mode runs from the commit hook."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import gta_core
from gta_core.errors import InvalidArguments, SchemaError, SubmitError, UnknownTask
from gta_core.testing import eager

from ..support.async_handles import ASYNC_KINDS, EAGER, UNWOKEN, AsyncCaller, SyncCaller, driver_url
from ..support.backends import ENABLED, only_on
from ..support.helpers import Env
from ..support.paths import REPO

PARAMS = [pytest.param((backend, kind), id=f"{backend}-{kind}") for backend in ENABLED for kind in ASYNC_KINDS[backend]]
WOKEN = [pytest.param((backend, kind), id=f"{backend}-{kind}") for backend in ENABLED for kind in ASYNC_KINDS[backend]
         if (backend, kind) not in UNWOKEN]
EAGER_PARAMS = [pytest.param((backend, kind), id=f"{backend}-{kind}") for backend in ENABLED
                for kind in ASYNC_KINDS[backend] if kind in EAGER]


@pytest.fixture(params=PARAMS)
def backend_kind(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def backend(backend_kind: tuple[str, str]) -> str:
    return backend_kind[0]


Scenario = Callable[[Callable[[], Awaitable[AsyncCaller]]], Awaitable[Any]]


@pytest.fixture
def run_async(env: Env, backend_kind: tuple[str, str]) -> Callable[[Scenario], Any]:
    """Runs a scenario in a fresh event loop, with an opener of callers of the kind under test
    (each closed afterwards)."""
    def run(scenario: Scenario) -> Any:
        async def main() -> Any:
            opened: list[AsyncCaller] = []

            async def open_one() -> AsyncCaller:
                opened.append(await ASYNC_KINDS[backend_kind[0]][backend_kind[1]](env.db_url))
                return opened[-1]
            try:
                return await scenario(open_one)
            finally:
                for caller in opened:
                    await caller.close()
        return asyncio.run(main())
    return run


def test_commit_runs_once_under_a_supervisor(env: Env, run_async: Callable[[Scenario], Any]) -> None:
    async def scenario(open_caller: Callable[[], Awaitable[AsyncCaller]]) -> list[int]:
        caller = await open_caller()
        ids = [await gta_core.asubmit(caller.handle, "record", {"n": 1}),
               *await gta_core.asubmit_many(caller.handle, [("record", {"n": 2}), ("record", {"n": 3})])]
        assert env.statuses(ids) == {}  # not visible outside the caller's transaction yet
        await caller.commit()
        return ids
    ids = run_async(scenario)
    assert env.statuses(ids) == dict.fromkeys(ids, "pending")
    env.supervisor(1)
    assert env.wait_final(ids) == dict.fromkeys(ids, "succeeded")
    assert env.runs_by_task() == dict.fromkeys(ids, 1)


@pytest.mark.parametrize("backend_kind", WOKEN)
def test_commit_wakes_an_idle_supervisor(env: Env, run_async: Callable[[Scenario], Any]) -> None:
    """With polls 5 minutes apart, only the wake-up sent at commit (NOTIFY on PostgreSQL, the
    commit hook's local datagram elsewhere) can get the second task run within the watchdog."""
    env.supervisor(1, extra_env={"GTA_SCAN_INTERVAL": "300", "GTA_INSTANT_SCAN_INTERVAL": "300"})
    ids: list[int] = []
    for n in range(2):  # the first may be found by the worker's first poll; the second only by a wake-up
        async def scenario(open_caller: Callable[[], Awaitable[AsyncCaller]], n: int = n) -> int:
            caller = await open_caller()
            task_id = await gta_core.asubmit(caller.handle, "record", {"n": n})
            await caller.commit()
            return task_id
        ids.append(run_async(scenario))
        assert env.wait_final(ids[-1:]) == {ids[-1]: "succeeded"}
    assert env.runs_by_task() == dict.fromkeys(ids, 1)


def test_rollback_leaves_no_row(env: Env, run_async: Callable[[Scenario], Any]) -> None:
    async def scenario(open_caller: Callable[[], Awaitable[AsyncCaller]]) -> list[int]:
        caller = await open_caller()
        ids = await gta_core.asubmit_many(caller.handle, [("record", {"n": n}) for n in range(3)])
        ids.append(await gta_core.asubmit(caller.handle, "record", {"n": 4}, dedupe_key="k"))
        await caller.rollback()
        return ids
    ids = run_async(scenario)
    assert env.statuses(ids) == {}
    assert env.store.counts() == {}


class Boom(Exception):
    """Raised to roll a savepoint back."""


def test_a_rolled_back_savepoint_takes_only_its_tasks(env: Env, run_async: Callable[[Scenario], Any]) -> None:
    async def scenario(open_caller: Callable[[], Awaitable[AsyncCaller]]) -> list[int]:
        caller = await open_caller()
        before = await gta_core.asubmit(caller.handle, "record", {"n": 1})
        dropped: list[int] = []
        with pytest.raises(Boom):
            async with caller.savepoint():
                dropped.append(await gta_core.asubmit(caller.handle, "record", {"n": 2}))
                raise Boom
        async with caller.savepoint():
            kept = await gta_core.asubmit(caller.handle, "record", {"n": 3})
        await caller.commit()
        assert env.statuses([before, *dropped, kept]) == dict.fromkeys([before, kept], "pending")
        return dropped
    assert len(run_async(scenario)) == 1


@pytest.mark.parametrize("call, error", [
    (lambda h: gta_core.asubmit(h, "no.such.task"), UnknownTask),
    (lambda h: gta_core.asubmit(h, "record", {"n": object()}), InvalidArguments),
    (lambda h: gta_core.asubmit(h, "record", {"n": 1}, priority=2**40), InvalidArguments),
    (lambda h: gta_core.asubmit_many(h, [("record", {"n": 1}), ("record", {"bogus": 1})]), InvalidArguments),
], ids=["unknown-key", "unencodable-args", "priority", "one-bad-row-of-many"])
def test_bad_input_writes_nothing_and_leaves_the_transaction_usable(
        env: Env, run_async: Callable[[Scenario], Any], call: Callable[[object], Awaitable[object]],
        error: type[Exception]) -> None:
    async def scenario(open_caller: Callable[[], Awaitable[AsyncCaller]]) -> list[int]:
        caller = await open_caller()
        first = await gta_core.asubmit(caller.handle, "record", {"n": 1})
        with pytest.raises(error):
            await call(caller.handle)
        second = await gta_core.asubmit(caller.handle, "record", {"n": 2})  # the transaction still works
        await caller.commit()
        return [first, second]
    ids = run_async(scenario)
    assert env.statuses(ids) == dict.fromkeys(ids, "pending")
    assert sum(env.store.counts().values()) == 2


def test_options_dedupe_and_many_rows(env: Env, run_async: Callable[[Scenario], Any]) -> None:
    """The rows are those `submit` writes: options in their columns, a dedupe key keeps one row,
    ids in the order given across more than one insert statement (500 rows a chunk)."""
    async def scenario(open_caller: Callable[[], Awaitable[AsyncCaller]]) -> tuple[list[int], int, int, int]:
        caller = await open_caller()
        many = await gta_core.asubmit_many(caller.handle, [("record", {"n": n}) for n in range(501)])
        first = await gta_core.asubmit(caller.handle, "record", {"n": 1}, dedupe_key="order-7", priority=5,
                                       queue="mail", delay=3600, max_attempts=2, order_key="o")
        again = await gta_core.asubmit(caller.handle, "record", {"n": 2}, dedupe_key="order-7")
        await caller.commit()
        return many, first, again, len(set(many))
    many, first, again, distinct = run_async(scenario)
    assert again == first and distinct == 501
    assert all(env.runtime.store.get(task_id)["args"] == json.dumps({"n": n}).replace(" ", "")
               or json.loads(env.runtime.store.get(task_id)["args"]) == {"n": n} for n, task_id in
               [(0, many[0]), (250, many[250]), (500, many[500])])
    row = env.runtime.store.get(first)
    assert (row["priority"], row["queue"], row["max_attempts"], row["order_key"], row["dedupe_key"]) == \
        (5, "mail", 2, "o", "order-7")
    assert sum(env.store.counts().values()) == 502


def test_a_handle_without_the_task_table_is_refused(env: Env, run_async: Callable[[Scenario], Any],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    async def scenario(open_caller: Callable[[], Awaitable[AsyncCaller]]) -> int:
        caller = await open_caller()
        monkeypatch.setattr(env.runtime, "settings",
                            dataclasses.replace(env.runtime.settings, table="gta_no_such_table"))
        with pytest.raises(SchemaError, match="gta_no_such_table.* is missing"):
            await gta_core.asubmit(caller.handle, "record", {"n": 1})
        monkeypatch.undo()
        task_id = await gta_core.asubmit(caller.handle, "record", {"n": 2})  # the transaction still works
        await caller.commit()
        return task_id
    task_id = run_async(scenario)
    assert env.statuses([task_id]) == {task_id: "pending"}


@pytest.mark.parametrize("backend_kind", EAGER_PARAMS)
def test_eager_mode_runs_after_commit_and_never_on_rollback(env: Env, run_async: Callable[[Scenario], Any]) -> None:
    async def scenario(open_caller: Callable[[], Awaitable[AsyncCaller]]) -> None:
        caller = await open_caller()
        with eager() as run:
            await gta_core.asubmit(caller.handle, "record", {"n": 1})
            assert run.results == [], "ran before the commit"
            await caller.commit()
            assert run.outcomes("record") == ["succeeded"]
            await gta_core.asubmit(caller.handle, "record", {"n": 2})
            await caller.rollback()
            assert run.outcomes("record") == ["succeeded"], "a rolled-back submit ran"
    run_async(scenario)
    assert env.store.counts() == {}, "eager mode wrote rows"


# -- handles that cannot keep the promise -------------------------------------------------------
@pytest.mark.parametrize("backend", [only_on("postgres")])
def test_asyncpg_outside_a_transaction_is_refused_and_eager_needs_a_hook(env: Env) -> None:
    import asyncpg

    async def scenario() -> int:
        connection = await asyncpg.connect(env.db_url)
        try:
            with pytest.raises(SubmitError, match="asyncpg connection has no transaction open"):
                await gta_core.asubmit(connection, "record", {"n": 1})
            async with connection.transaction():
                with eager(), pytest.raises(SubmitError, match="no commit hook"):
                    await gta_core.asubmit(connection, "record", {"n": 1})
                return await gta_core.asubmit(connection, "record", {"n": 2})
        finally:
            await connection.close()
    task_id = asyncio.run(scenario())
    assert env.statuses([task_id]) == {task_id: "pending"}
    assert sum(env.store.counts().values()) == 1


@pytest.mark.parametrize("backend", [only_on("postgres")])
def test_psycopg_in_autocommit_is_refused(env: Env) -> None:
    import psycopg

    async def scenario() -> int:
        async with await psycopg.AsyncConnection.connect(env.db_url, autocommit=True) as connection:
            with pytest.raises(SubmitError, match="autocommit mode with no transaction open"):
                await gta_core.asubmit(connection, "record", {"n": 1})
            async with connection.transaction():  # an explicit transaction is one
                return await gta_core.asubmit(connection, "record", {"n": 2})
    task_id = asyncio.run(scenario())
    assert env.statuses([task_id]) == {task_id: "pending"}
    assert sum(env.store.counts().values()) == 1


@pytest.mark.parametrize("backend", ["sqlite", only_on("postgres"), only_on("mariadb")])
def test_sqlalchemy_autocommit_is_refused(env: Env, backend: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine
    driver = {"sqlite": "aiosqlite", "postgres": "asyncpg", "mariadb": "aiomysql"}[backend]

    async def scenario() -> None:
        engine = create_async_engine(driver_url(env.db_url, driver), isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as connection:
                with pytest.raises(SubmitError, match="AsyncConnection is in AUTOCOMMIT isolation"):
                    await gta_core.asubmit(connection, "record", {"n": 1})
        finally:
            await engine.dispose()
    asyncio.run(scenario())
    assert env.store.counts() == {}


@pytest.mark.parametrize("backend", [only_on("mariadb")])
def test_aiomysql_in_autocommit_is_refused(env: Env) -> None:
    import aiomysql

    from ..support.handles import mysql_params

    async def scenario() -> int:
        params = mysql_params(env.db_url)
        connection = await aiomysql.connect(host=params["host"], port=params["port"], user=params["user"],
                                            password=params["password"], db=params["database"], autocommit=True)
        try:
            with pytest.raises(SubmitError, match="autocommit mode with no transaction open"):
                await gta_core.asubmit(connection, "record", {"n": 1})
            await connection.begin()  # an explicit transaction is one
            task_id = await gta_core.asubmit(connection, "record", {"n": 2})
            await connection.commit()
            return task_id
        finally:
            connection.close()
    task_id = asyncio.run(scenario())
    assert env.statuses([task_id]) == {task_id: "pending"}
    assert sum(env.store.counts().values()) == 1


@pytest.mark.parametrize("backend", ["sqlite"])
def test_aiosqlite_in_autocommit_is_refused(env: Env) -> None:
    import aiosqlite

    from ..support.handles import sqlite_path

    async def scenario() -> int:
        async with aiosqlite.connect(sqlite_path(env.db_url), isolation_level=None) as connection:
            with pytest.raises(SubmitError, match="autocommit mode with no transaction open"):
                await gta_core.asubmit(connection, "record", {"n": 1})
            await connection.execute("BEGIN")  # an explicit transaction is one
            task_id = await gta_core.asubmit(connection, "record", {"n": 2})
            await connection.execute("COMMIT")
            return task_id
    task_id = asyncio.run(scenario())
    assert env.statuses([task_id]) == {task_id: "pending"}
    assert sum(env.store.counts().values()) == 1


@pytest.mark.parametrize("backend", ["sqlite"])
def test_none_and_unknown_handles_are_refused(env: Env) -> None:
    with pytest.raises(SubmitError, match="db_tx is None"):
        asyncio.run(gta_core.asubmit(None, "record", {"n": 1}))
    with pytest.raises(SubmitError, match="a SQLAlchemy Session or Connection"):
        asyncio.run(gta_core.asubmit("sqlite:///x.db", "record", {"n": 1}))

    class AsyncConnection:  # an async driver GTA has no adapter for (asyncmy, say) is named as such
        pass
    with pytest.raises(SubmitError, match="must be an asyncpg connection, .*got AsyncConnection"):
        asyncio.run(gta_core.asubmit(AsyncConnection(), "record", {"n": 1}))
    assert env.store.counts() == {}


@pytest.mark.parametrize("backend", [only_on("postgres")])
def test_a_connection_to_another_database_is_refused(env: Env) -> None:
    import asyncpg

    async def scenario() -> None:
        connection = await asyncpg.connect(env.db_url.rsplit("/", 1)[0] + "/postgres")
        try:
            async with connection.transaction():
                with pytest.raises(SubmitError, match="is on database 'postgres', GTA's is"):
                    await gta_core.asubmit(connection, "record", {"n": 1})
        finally:
            await connection.close()
    asyncio.run(scenario())


def test_importing_gta_imports_no_async_driver() -> None:
    """The adapters are imported when their handle is passed, never by ``import gta_core``
    (psycopg is left out: peewee itself imports it where it is installed)."""
    code = ("import sys, gta_core; loaded = {'asyncpg', 'aiomysql', 'aiosqlite', 'sqlalchemy'} "
            "& set(sys.modules); assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_sync_submit_points_an_async_handle_to_asubmit(env: Env, run_async: Callable[[Scenario], Any]) -> None:
    async def scenario(open_caller: Callable[[], Awaitable[AsyncCaller]]) -> None:
        caller = await open_caller()
        if isinstance(caller, SyncCaller):
            return
        with pytest.raises(SubmitError, match=r"async handle .*await gta_core.asubmit"):
            gta_core.submit(caller.handle, "record", {"n": 1})
        await caller.commit()
    run_async(scenario)
    assert env.store.counts() == {}
