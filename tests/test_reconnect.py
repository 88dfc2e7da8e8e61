"""A session the server ends (``pg_terminate_backend``, MariaDB ``KILL``) costs one statement,
never the thread's connection for good: the next statement outside a transaction opens a new
connection. peewee alone hands a thread its dead connection again and again ("connection
already closed"), and a supervisor loop retrying a plain read on it rescued nothing (issue 14).
"""
from __future__ import annotations

import peewee
import pytest

from gta_core.database import open_database
from gta_core.transactions import in_transaction

from .chaos.servers import end_sessions

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
