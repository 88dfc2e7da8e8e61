"""`PostgresDatabase`: the ``BEGIN`` that rides with a transaction's first statement, and the
hot statements (one-row insert, lease, batched completion) prepared once per connection. Each test
states what the server must see."""
from __future__ import annotations

import peewee
import psycopg2.extensions
import pytest

import gta_core
from gta_core.db.connect import PostgresDatabase, drop_connection
from gta_core.db.transactions import in_transaction

from ..support.backends import only_on
from ..support.helpers import Env

IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE
INTRANS = psycopg2.extensions.TRANSACTION_STATUS_INTRANS


class Boom(Exception):
    """Raised to roll a transaction back."""


@pytest.fixture(params=[only_on("postgres")])
def backend(request: pytest.FixtureRequest) -> str:
    """PostgreSQL only (conftest's fixture of the same name runs every configured database)."""
    return str(request.param)


@pytest.fixture
def pg(env: Env) -> Env:
    assert isinstance(env.runtime.db, PostgresDatabase) and env.runtime.db.prepares
    return env


def server_status(db: PostgresDatabase) -> int:
    """The session's transaction status as the server last reported it (no round trip)."""
    return int(db._state.conn.get_transaction_status())


def count(env: Env) -> int:
    return int(env.runtime.db.execute_sql(f"SELECT COUNT(*) FROM {env.table}").fetchone()[0])


def test_first_statement_opens_the_transaction(pg: Env) -> None:
    db = pg.runtime.db
    with pytest.raises(Boom), db.atomic() as tx:
        gta_core.submit(tx, "record", {"n": 1})
        assert server_status(db) == INTRANS
        raise Boom
    assert server_status(db) == IDLE and count(pg) == 0


def test_a_raw_cursor_runs_inside_the_transaction(pg: Env) -> None:
    """Code that bypasses execute_sql gets the BEGIN sent first, or its write would autocommit."""
    db = pg.runtime.db
    kept = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1})
    with pytest.raises(Boom), db.atomic():
        db.cursor().execute(f"DELETE FROM {pg.table}")
        raise Boom
    with pytest.raises(Boom), db.atomic():
        db.connection().cursor().execute(f"DELETE FROM {pg.table}")
        raise Boom
    assert pg.statuses([kept]) == {kept: "pending"}


def test_an_empty_transaction_leaves_the_session_idle(pg: Env) -> None:
    db = pg.runtime.db
    with db.atomic():
        pass
    with pytest.raises(Boom), db.atomic():
        raise Boom
    db.execute_sql("SELECT 1")
    assert server_status(db) == IDLE


def test_a_begin_noted_on_a_dropped_connection_is_forgotten(pg: Env) -> None:
    """After the connection is dropped mid-transaction, a statement outside any transaction
    must not open one on the new connection (nobody would ever commit it)."""
    db = pg.runtime.db
    db.begin()
    drop_connection(db)
    db.execute_sql("SELECT 1")
    assert server_status(db) == IDLE


def test_a_dead_connection_found_by_the_first_statement_is_retried(pg: Env) -> None:
    """The first statement carries the BEGIN: failing there, nothing of the transaction ran."""
    db = pg.runtime.db
    db.execute_sql("SELECT 1")
    killer = PostgresDatabase(db.database, **db.connect_params)
    killer.execute_sql("SELECT pg_terminate_backend(%s)", (db._state.conn.get_backend_pid(),))
    killer.close()
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1})
    assert pg.statuses([task_id]) == {task_id: "pending"}
    assert in_transaction(db, lambda: db.execute_sql("SELECT 2").fetchone()[0]) == 2


def test_the_prepared_insert_outlives_rollbacks_and_reconnects(pg: Env) -> None:
    db = pg.runtime.db
    with pytest.raises(Boom), db.atomic() as tx:  # the first use prepares, then rolls back
        gta_core.submit(tx, "record", {"n": 1})
        raise Boom
    kept = [gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 2})]
    drop_connection(db)
    kept.append(gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 3}, delay=60, priority=4, order_key="o"))
    assert count(pg) == 2
    prepared = db.execute_sql("SELECT COUNT(*) FROM pg_prepared_statements WHERE statement LIKE '%%INSERT INTO%%'")
    assert prepared.fetchone()[0] == 1
    stored = [pg.store.get(task_id) for task_id in kept]
    assert [(row["args"], row["priority"], row["order_key"]) for row in stored if row] == [
        ('{"n":2}', 0, None), ('{"n":3}', 4, "o")]


def test_leases_and_batched_completions_run_prepared_and_stay_fenced(pg: Env) -> None:
    db, store = pg.runtime.db, pg.store
    ids = [gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": n}) for n in range(4)]
    leased = {task.id: task.attempts for task in store.lease("owner-a", ["default"], 3, 30.0)}
    assert len(leased) == 3 and set(leased) <= set(ids)
    first, second, third = sorted(leased)
    # a stale attempt and another owner's claim are refused; the rest lands, in one statement
    attempts = [leased[first], leased[second] + 1, leased[third]]
    assert store.complete_many("owner-b", [first], [leased[first]]) == set()
    assert store.complete_many("owner-a", [first, second, third], attempts) == {first, third}
    prepared = [row[0] for row in db.execute_sql("SELECT statement FROM pg_prepared_statements").fetchall()]
    assert any("SKIP LOCKED" in text for text in prepared), prepared
    assert any("unnest" in text for text in prepared), prepared

    drop_connection(db)  # a new connection prepares them again
    (last,) = store.lease("owner-a", ["default"], 3, 30.0)
    assert store.complete_many("owner-a", [second, last.id]) == {second, last.id}  # no attempts: owner and status
    statuses = {row[0]: row[1] for row in db.execute_sql(f"SELECT id, status FROM {pg.table}").fetchall()}
    assert statuses == dict.fromkeys(ids, "succeeded")


def test_a_session_that_forgets_prepared_statements_gets_them_unprepared(
        pg: Env, caplog: pytest.LogCaptureFixture) -> None:
    """What ``DISCARD ALL`` behind GTA's back, or a pooler in transaction mode, does to a session."""
    db, store = pg.runtime.db, pg.store
    gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 0})
    assert store.lease("owner-a", ["default"], 1, 30.0)  # both statements are prepared now
    db.execute_sql("DEALLOCATE ALL")
    kept = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1})  # alone: re-run unprepared at once
    assert "forgot a prepared statement" in caplog.text
    assert [task.id for task in store.lease("owner-a", ["default"], 5, 30.0)] == [kept]
    with db.atomic() as tx:
        gta_core.submit(tx, "record", {"n": 2})
    assert db.execute_sql("SELECT COUNT(*) FROM pg_prepared_statements").fetchone()[0] == 0
    assert count(pg) == 3


def test_a_forgotten_prepared_statement_as_the_first_statement_of_a_transaction_is_run_again(pg: Env) -> None:
    """Nothing of the caller's transaction ran before: GTA begins it again, unprepared."""
    db = pg.runtime.db
    gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 0})
    db.execute_sql("DEALLOCATE ALL")
    with db.atomic() as tx:
        gta_core.submit(tx, "record", {"n": 1})
        db.execute_sql("SELECT 1")  # the transaction goes on
    with db.atomic() as tx:
        gta_core.submit(tx, "record", {"n": 2})
        tx.rollback()  # and is the caller's still: its rollback takes the task along
    assert [row[0] for row in db.execute_sql(f"SELECT args FROM {pg.table} ORDER BY id").fetchall()] == [
        '{"n":0}', '{"n":1}']


def test_a_forgotten_prepared_statement_fails_only_its_own_transaction(pg: Env) -> None:
    db = pg.runtime.db
    gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 0})
    db.execute_sql("DEALLOCATE ALL")
    with pytest.raises(gta_core.DatabaseError, match="does not exist") as failed, db.atomic() as tx:
        db.execute_sql("SELECT 1")  # the caller's own statement ran first: nothing can re-run the transaction
        gta_core.submit(tx, "record", {"n": 1})  # the server aborted the transaction: it fails, whole
    assert isinstance(failed.value.__cause__, peewee.OperationalError)  # GTA's error, the driver's chained
    with db.atomic() as tx:
        gta_core.submit(tx, "record", {"n": 2})
    assert [row[0] for row in db.execute_sql(f"SELECT args FROM {pg.table} ORDER BY id").fetchall()] == [
        '{"n":0}', '{"n":2}']
