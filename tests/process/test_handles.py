"""Submitting through the application's own transaction handle (SQLAlchemy, Django, PEP 249
connections): the task exists if and only if that transaction commits, a rolled-back
savepoint takes its tasks with it, bad input writes nothing and leaves the transaction usable,
and a handle that cannot keep that promise (no transaction, another database) is refused."""
from __future__ import annotations

import dataclasses
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import peewee
import pytest

import gta_core
from gta_core.errors import InvalidArguments, SchemaError, SubmitError, UnknownTask
from gta_core.runtime import Runtime

from ..support.backends import ENABLED, only_on
from ..support.handles import KINDS, Caller, django_alias, sqlite_path
from ..support.helpers import Env

PARAMS = [pytest.param((backend, kind), id=f"{backend}-{kind}") for backend in ENABLED for kind in KINDS[backend]]
#: the kinds whose commit wakes a supervisor: all on PostgreSQL (NOTIFY); elsewhere those with a
#: commit hook (a plain DB-API connection has none there: polling finds its tasks)
WOKEN = [pytest.param((backend, kind), id=f"{backend}-{kind}") for backend in ENABLED for kind in KINDS[backend]
         if backend == "postgres" or kind not in ("sqlite3", "pymysql")]


class Boom(Exception):
    """Raised to roll a savepoint back."""


@pytest.fixture(params=PARAMS)
def backend_kind(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def backend(backend_kind: tuple[str, str]) -> str:
    return backend_kind[0]


@pytest.fixture
def open_caller(env: Env, backend_kind: tuple[str, str]) -> Iterator[Callable[[], Caller]]:
    """Opens transactions of the kind under test on the env's database; closes them after."""
    opened: list[Caller] = []

    def open_one() -> Caller:
        opened.append(KINDS[backend_kind[0]][backend_kind[1]](env.db_url))
        return opened[-1]
    yield open_one
    for caller in opened:
        caller.close()


def test_commit_runs_once_under_a_supervisor(env: Env, open_caller: Callable[[], Caller]) -> None:
    caller = open_caller()
    ids = [gta_core.submit(caller.handle, "record", {"n": 1}),
           *gta_core.submit_many(caller.handle, [("record", {"n": 2}), ("record", {"n": 3})])]
    assert env.statuses(ids) == {}  # not visible outside the caller's transaction yet
    caller.commit()
    assert env.statuses(ids) == dict.fromkeys(ids, "pending")
    env.supervisor(1)
    assert env.wait_final(ids) == dict.fromkeys(ids, "succeeded")
    assert env.runs_by_task() == dict.fromkeys(ids, 1)


@pytest.mark.parametrize("backend_kind", WOKEN)
def test_commit_wakes_an_idle_supervisor(env: Env, open_caller: Callable[[], Caller]) -> None:
    """With polls 5 minutes apart, only the wake-up sent at commit (NOTIFY on PostgreSQL, the
    commit hook's local datagram elsewhere) can get the second task run within the watchdog."""
    env.supervisor(1, extra_env={"GTA_SCAN_INTERVAL": "300", "GTA_INSTANT_SCAN_INTERVAL": "300"})
    ids = []
    for n in range(2):  # the first may be found by the worker's first poll; the second only by a wake-up
        caller = open_caller()
        ids.append(gta_core.submit(caller.handle, "record", {"n": n}))
        caller.commit()
        assert env.wait_final(ids[-1:]) == {ids[-1]: "succeeded"}
    assert env.runs_by_task() == dict.fromkeys(ids, 1)


def test_rollback_leaves_no_row(env: Env, open_caller: Callable[[], Caller]) -> None:
    caller = open_caller()
    task_id = gta_core.submit(caller.handle, "record", {"n": 1})
    caller.rollback()
    assert env.statuses([task_id]) == {}
    assert env.store.counts() == {}


def test_a_rolled_back_savepoint_takes_only_its_tasks(env: Env, open_caller: Callable[[], Caller]) -> None:
    caller = open_caller()
    before = gta_core.submit(caller.handle, "record", {"n": 1})
    with pytest.raises(Boom), caller.savepoint():
        dropped = gta_core.submit(caller.handle, "record", {"n": 2})
        raise Boom
    with caller.savepoint():
        kept = gta_core.submit(caller.handle, "record", {"n": 3})
    after = gta_core.submit(caller.handle, "record", {"n": 4})
    caller.commit()
    assert env.statuses([before, dropped, kept, after]) == dict.fromkeys([before, kept, after], "pending")


@pytest.mark.parametrize("call, error", [
    (lambda h: gta_core.submit(h, "no.such.task"), UnknownTask),
    (lambda h: gta_core.submit(h, "record", {"n": object()}), InvalidArguments),
    (lambda h: gta_core.submit(h, "record", {"n": 1}, priority=2**40), InvalidArguments),
    (lambda h: gta_core.submit_many(h, [("record", {"n": 1}), ("record", {"bogus": 1})]), InvalidArguments),
], ids=["unknown-key", "unencodable-args", "priority", "one-bad-row-of-many"])
def test_bad_input_writes_nothing_and_leaves_the_transaction_usable(
        env: Env, open_caller: Callable[[], Caller], call: Callable[[object], object], error: type[Exception]) -> None:
    caller = open_caller()
    first = gta_core.submit(caller.handle, "record", {"n": 1})
    with pytest.raises(error):
        call(caller.handle)
    second = gta_core.submit(caller.handle, "record", {"n": 2})  # the transaction still works
    caller.commit()
    assert env.statuses([first, second]) == {first: "pending", second: "pending"}
    assert sum(env.store.counts().values()) == 2


def test_a_dedupe_key_keeps_one_row(env: Env, open_caller: Callable[[], Caller]) -> None:
    caller = open_caller()
    first = gta_core.submit(caller.handle, "record", {"n": 1}, dedupe_key="order-7")
    again = gta_core.submit(caller.handle, "record", {"n": 2}, dedupe_key="order-7")
    other = gta_core.submit(caller.handle, "record", {"n": 3})  # the transaction goes on after the conflict
    caller.commit()
    assert again == first
    assert env.statuses([first, other]) == {first: "pending", other: "pending"}
    assert sum(env.store.counts().values()) == 2


def test_cancel_commits_and_rolls_back_with_the_caller(env: Env, open_caller: Callable[[], Caller]) -> None:
    task_id = gta_core.submit(env.runtime.db, "record", {"n": 1})
    caller = open_caller()
    assert gta_core.cancel(task_id, db=caller.handle) == {task_id: gta_core.CancelResult(True, "pending")}
    caller.rollback()
    assert env.statuses([task_id]) == {task_id: "pending"}
    caller = open_caller()
    gta_core.cancel([task_id], db=caller.handle)
    caller.commit()
    assert env.statuses([task_id]) == {task_id: "cancelled"}


def test_a_handle_without_the_task_table_is_refused(env: Env, open_caller: Callable[[], Caller],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    caller = open_caller()
    monkeypatch.setattr(env.runtime, "settings", dataclasses.replace(env.runtime.settings, table="gta_no_such_table"))
    with pytest.raises(SchemaError, match="gta_no_such_table.* is missing"):
        gta_core.submit(caller.handle, "record", {"n": 1})
    monkeypatch.undo()
    task_id = gta_core.submit(caller.handle, "record", {"n": 2})  # the transaction still works
    caller.commit()
    assert env.statuses([task_id]) == {task_id: "pending"}


# -- handles that cannot keep the promise -------------------------------------------------------
@pytest.mark.parametrize("backend", ["sqlite"])
def test_an_autocommit_connection_is_refused(env: Env, tmp_path: object) -> None:
    connection = sqlite3.connect(sqlite_path(env.db_url), isolation_level=None)
    with pytest.raises(SubmitError, match="autocommit mode with no transaction open"):
        gta_core.submit(connection, "record", {"n": 1})
    connection.execute("BEGIN")  # an explicit transaction is one
    task_id = gta_core.submit(connection, "record", {"n": 1})
    connection.execute("COMMIT")
    connection.close()
    assert env.statuses([task_id]) == {task_id: "pending"}
    assert sum(env.store.counts().values()) == 1


@pytest.mark.parametrize("backend", ["sqlite"])
def test_django_outside_atomic_is_refused(env: Env) -> None:
    from django.db import connection
    from django.db import transaction as django_transaction
    django_alias("sqlite", env.db_url)  # points Django's default alias at this test's file
    with pytest.raises(SubmitError, match="not inside transaction.atomic"):
        gta_core.submit(connection, "record", {"n": 1})
    with django_transaction.atomic():
        task_id = gta_core.submit(connection, "record", {"n": 1})  # the proxy for the default alias
    assert env.statuses([task_id]) == {task_id: "pending"}
    assert sum(env.store.counts().values()) == 1


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_connection_to_another_database_is_refused(env: Env, tmp_path: object) -> None:
    other = sqlite3.connect(":memory:")
    with pytest.raises(SubmitError, match="is on database ':memory:', GTA's is"):
        gta_core.submit(other, "record", {"n": 1})
    other.close()
    assert env.store.counts() == {}


@pytest.mark.parametrize("backend", [only_on("postgres")])
def test_a_connection_of_another_dialect_is_refused(env: Env, tmp_path: object) -> None:
    other = sqlite3.connect(":memory:")
    with pytest.raises(SubmitError, match="is on sqlite, GTA's database is postgres"):
        gta_core.submit(other, "record", {"n": 1})
    other.close()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_an_unknown_handle_names_what_to_pass(env: Env) -> None:
    with pytest.raises(SubmitError, match="a SQLAlchemy Session or Connection, a Django connection"):
        gta_core.submit("sqlite:///x.db", "record")


# -- peewee Databases: on GTA's database, told from their settings (issue 27) -----------------
@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_peewee_database_on_another_file_is_refused_without_opening_it(env: Env, tmp_path: Path) -> None:
    """The application's own shop.db beside GTA's file, with a task table of its own there
    (`gta migrate` once run against it): a task written there would never run."""
    shop = tmp_path / "shop.db"
    elsewhere = Runtime(gta_core.load_settings({"database_url": f"sqlite:///{shop}", "table": env.table}))
    elsewhere.store.migrate()
    app_db = peewee.SqliteDatabase(str(shop))
    expected = (f"the peewee SqliteDatabase is on database {os.path.realpath(shop)!r}, GTA's is "
                f"{os.path.realpath(sqlite_path(env.db_url))!r} (GTA_DATABASE_URL, which must be your "
                "application's database)")
    with pytest.raises(SubmitError) as info:
        gta_core.submit(app_db, "record", {"n": 1})
    assert str(info.value).startswith(expected)
    assert app_db.is_closed()  # told from its settings: nothing opened, nothing read
    with app_db.atomic() as tx:
        for refused in (lambda: gta_core.submit(tx, "record", {"n": 1}),
                        lambda: gta_core.submit_many(tx, [("record", {"n": 2})]),
                        lambda: gta_core.transaction(app_db).__enter__(),
                        lambda: gta_core.status(1, db=tx)):
            with pytest.raises(SubmitError, match="which must be your application's database"):
                refused()
    app_db.close()
    assert elsewhere.store.counts() == {} and env.store.counts() == {}
    elsewhere.db.close()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_another_peewee_database_on_gtas_file_is_accepted(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """GTA's file through another Database object, named by a relative path or a roundabout one."""
    path = Path(sqlite_path(env.db_url))
    monkeypatch.chdir(path.parent)
    ids = []
    for name in (path.name, f"{path.parent}/../{path.parent.name}/{path.name}"):
        app_db = peewee.SqliteDatabase(name)
        with app_db.atomic() as tx:
            ids.append(gta_core.submit(tx, "record", {"n": len(ids)}))
        app_db.close()
    assert env.statuses(ids) == dict.fromkeys(ids, "pending")


@pytest.mark.parametrize("backend", [only_on("postgres")])
def test_a_peewee_database_of_another_dialect_is_refused(env: Env, tmp_path: Path) -> None:
    """An application on SQLite with GTA_DATABASE_URL on PostgreSQL: its tasks went into the
    SQLite file without a word."""
    app_db = peewee.SqliteDatabase(str(tmp_path / "app.db"))
    with pytest.raises(SubmitError, match="the peewee SqliteDatabase is on sqlite, GTA's database is postgres"):
        gta_core.submit(app_db, "record", {"n": 1})
    assert app_db.is_closed()


@pytest.mark.parametrize("backend", [only_on("postgres"), only_on("mariadb")])
def test_a_peewee_database_on_another_server_database_is_refused(env: Env, backend: str) -> None:
    """Compared by database name, from the Database's settings; the same database under another
    host name (localhost for 127.0.0.1) is accepted."""
    url = urlparse(env.db_url)
    kind, other = (peewee.PostgresqlDatabase, "postgres") if backend == "postgres" else (peewee.MySQLDatabase, "mysql")
    ours = url.path.lstrip("/")
    params = {"user": url.username, "port": url.port}
    app_db = kind(other, host=url.hostname, **params)
    with pytest.raises(SubmitError, match=f"the peewee {kind.__name__} is on database '{other}', GTA's is '{ours}'"):
        gta_core.submit(app_db, "record", {"n": 1})
    assert app_db.is_closed()
    same = kind(ours, host="localhost", **params)
    with same.atomic() as tx:
        task_id = gta_core.submit(tx, "record", {"n": 1})
    same.close()
    assert env.statuses([task_id]) == {task_id: "pending"}
