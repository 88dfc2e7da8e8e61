"""A session the server ends (``pg_terminate_backend``, MariaDB ``KILL``) costs one statement,
never the thread's connection for good: the next statement outside a transaction opens a new
connection. peewee alone hands a thread its dead connection again and again ("connection
already closed"), and a supervisor loop retrying a plain read on it rescued nothing (issue 14).
"""
from __future__ import annotations

import secrets
import time

import peewee
import pytest

import gta_core
from gta_core.db.connect import open_database
from gta_core.db.transactions import in_transaction

from ..chaos.servers import end_sessions
from ..support.helpers import Env

OWN_SESSION = {"postgres": "SELECT pg_backend_pid()", "mariadb": "SELECT CONNECTION_ID()"}
END_SESSION = {"postgres": "SELECT pg_terminate_backend({})", "mariadb": "KILL {}"}


def test_a_connection_the_server_ended_is_replaced(backend: str, db_url: str) -> None:
    if backend == "sqlite":
        pytest.skip("a SQLite connection has no server to end it")
    db, killer = open_database(db_url), open_database(db_url)
    try:
        for _ in range(2):  # outside a transaction, then inside one
            session = db.execute_sql(OWN_SESSION[backend]).fetchone()[0]
            assert end_sessions(killer, f"SELECT {int(session)}", END_SESSION[backend]) == 1
            with pytest.raises((peewee.OperationalError, peewee.InterfaceError)):
                db.execute_sql("SELECT 1")  # the statement that finds out fails
            assert db.execute_sql("SELECT 1").fetchone() == (1,)
            assert db.execute_sql(OWN_SESSION[backend]).fetchone()[0] != session

        def end_own_session() -> None:
            end_sessions(killer, f"SELECT {int(db.execute_sql(OWN_SESSION[backend]).fetchone()[0])}",
                         END_SESSION[backend])

        end_own_session()  # inside a transaction it is the transaction that fails, then the next one works
        with pytest.raises((peewee.OperationalError, peewee.InterfaceError)), db.atomic():
            db.execute_sql("SELECT 1")
        assert db.execute_sql("SELECT 1").fetchone() == (1,)
        end_own_session()  # and GTA's own transactions find out at BEGIN and run again on a new one
        assert in_transaction(db, lambda: db.execute_sql("SELECT 1").fetchone()) == (1,)
    finally:
        db.close()
        killer.close()


def test_the_server_ends_a_transaction_its_client_left_silent(backend: str, db_url: str) -> None:
    """A host cut off mid-transaction must not hold its row locks for hours: the server ends
    its session within the statement timeout (PostgreSQL's idle_in_transaction_session_timeout,
    MariaDB's idle_transaction_timeout), and another session can take the rows."""
    if backend == "sqlite":
        pytest.skip("SQLite has no server and no other host")
    table = f"gta_idle_{secrets.token_hex(4)}"
    silent, other = open_database(db_url, statement_timeout=1), open_database(db_url, statement_timeout=5)
    try:
        other.execute_sql(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY)")
        other.execute_sql(f"INSERT INTO {table} (id) VALUES (1)")
        with pytest.raises((peewee.OperationalError, peewee.InterfaceError)), silent.atomic():
            silent.execute_sql(f"SELECT id FROM {table} WHERE id = 1 FOR UPDATE")
            time.sleep(2.5)  # the client says nothing, as a host behind a partition
            try:  # the row is free again: the server ended the silent session
                with other.atomic():
                    other.execute_sql(f"SELECT id FROM {table} WHERE id = 1 FOR UPDATE NOWAIT")
            except peewee.DatabaseError as exc:
                pytest.fail(f"the silent session still holds its row lock: {exc}")
            silent.execute_sql("SELECT 1")  # and the silent client finds its session gone
    finally:
        other.execute_sql(f"DROP TABLE IF EXISTS {table}")
        for db in (silent, other):
            db.close()


def test_mysql_session_bounds_per_server() -> None:
    """MariaDB >= 10.3 gets an idle-transaction timeout; MySQL, which has none, the rest."""
    from gta_core.db.connect import mysql_session_settings

    mariadb = mysql_session_settings("5.5.5-10.11.6-MariaDB-0+deb12u1", 30)
    assert "idle_transaction_timeout = 30" in mariadb and "max_statement_time = 30" in mariadb
    assert "innodb_lock_wait_timeout = 6" in mariadb and "lock_wait_timeout = 30" in mariadb
    mysql = mysql_session_settings("8.0.36", 30)
    assert "max_execution_time = 30000" in mysql and "idle_transaction_timeout" not in mysql
    assert "idle_transaction_timeout" not in mysql_session_settings("10.2.44-MariaDB", 5)
    assert mysql_session_settings("10.11.6-MariaDB", 0) == ""


def test_a_submit_sent_alone_finds_a_session_the_server_ended_before_sending(env: Env, backend: str,
                                                                              db_url: str) -> None:
    """On PostgreSQL ``submit(db, ...)`` outside a transaction sends its insert alone, as its own
    transaction, which is never sent twice (it may have committed): a connection the server
    ended is found before the insert goes (`db.connect.drop_if_hung_up`), and the submit writes
    its task once, on a new session, instead of failing."""
    if backend != "postgres":
        pytest.skip("only PostgreSQL sends a submit outside a transaction as a statement alone")
    db, killer = env.store.db, open_database(db_url)
    try:
        session = db.execute_sql(OWN_SESSION[backend]).fetchone()[0]
        assert end_sessions(killer, f"SELECT {int(session)}", END_SESSION[backend]) == 1
        deadline = time.monotonic() + 10  # the server says goodbye on the socket, then closes it
        while killer.execute_sql(f"SELECT 1 FROM pg_stat_activity WHERE pid = {int(session)}").fetchone():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        task_id = gta_core.submit(db, "record", {"n": 1})
        assert db.execute_sql(OWN_SESSION[backend]).fetchone()[0] != session
        assert db.execute_sql(f"SELECT COUNT(*) FROM {env.table} WHERE id = %s", (task_id,)).fetchone() == (1,)
    finally:
        killer.close()
