"""Running the engine's statements: a transaction retried on deadlocks and lock waits
(`in_transaction`), or a single statement at the least cost (`in_statement`). A lost connection
is dropped so the next call reconnects, and reported as `DatabaseUnavailable`.
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

import peewee

from ..errors import DatabaseUnavailable
from .connect import PostgresDatabase, drop_connection
from .driver_errors import driver_error, is_disconnect, is_retryable

T = TypeVar("T")

#: a dead connection reused fails at once; a server that does not answer takes a timeout
STALE_FAILS_WITHIN = 1.0


def in_transaction(db: peewee.Database, fn: Callable[[], T], *, attempts: int = 8) -> T:
    """Run ``fn`` in a transaction on ``db``, retrying deadlocks and lock waits with jitter.

    A lost connection is dropped (so the next call reconnects) and reported as
    `DatabaseUnavailable`; the caller decides how long to back off. A connection found dead
    at once at ``BEGIN`` (a stale one, after a server restart or a killed session) ran
    nothing: that transaction is tried once more on a new connection instead of failing a
    submit. One that timed out there is no stale connection but a server that does not
    answer: a second try would only double the wait. On PostgreSQL the ``BEGIN`` goes with
    the transaction's first statement (`PostgresDatabase`), so a failure of that statement
    counts as one at ``BEGIN``.
    """
    return _with_retries(db, fn, attempts, transaction=True)


def in_statement(db: peewee.Database, fn: Callable[[], T], *, attempts: int = 8) -> T:
    """Run ``fn``, which sends exactly one statement, as its own transaction at the least cost.

    On PostgreSQL and MySQL/MariaDB (peewee keeps their drivers in autocommit mode) the
    statement runs without ``BEGIN``/``COMMIT``: one round trip instead of three for each
    lease, batched completion and heartbeat, and no transaction is ever left open between
    them. That matters beyond speed on MySQL/MariaDB, where an ``UPDATE`` keeps the lock of
    every row it reads by id until its transaction ends, matching or not: a heartbeat or a
    stale outcome write naming a row another worker has taken over, cut off by a partition
    between its ``UPDATE`` and its ``COMMIT``, held that worker's row until the server ended
    the session, and stalled that worker's heartbeats. Errors are handled as in
    `in_transaction`, except that nothing is re-sent after a lost connection: the statement
    may have run. On SQLite, and inside a caller's transaction, this is `in_transaction`
    (SQLite's leases need ``BEGIN IMMEDIATE``).
    """
    if isinstance(db, peewee.SqliteDatabase) or db.in_transaction():
        return in_transaction(db, fn, attempts=attempts)
    return _with_retries(db, fn, attempts, transaction=False)


def _with_retries(db: peewee.Database, fn: Callable[[], T], attempts: int, *, transaction: bool) -> T:
    """`in_transaction` (``fn`` inside ``db.atomic()``) or `in_statement` (``fn`` alone)."""
    # only a transaction of our own that failed at BEGIN ran nothing and may be sent again
    stale_retried = not transaction or db.in_transaction()
    for attempt in range(1, attempts + 1):
        began, started = False, time.monotonic()
        try:
            if not transaction:
                return fn()
            with db.atomic():
                began = True
                return fn()
        except (peewee.OperationalError, peewee.InterfaceError, peewee.InternalError, peewee.ProgrammingError) as exc:
            if is_disconnect(exc):
                nothing_ran = not began or (isinstance(db, PostgresDatabase) and db.failed_at_begin())
                drop_connection(db)
                if nothing_ran and not stale_retried and time.monotonic() - started < STALE_FAILS_WITHIN:
                    stale_retried = True
                    continue
                raise DatabaseUnavailable(f"database connection lost: {driver_error(exc)}") from exc
            if is_retryable(exc) and attempt < attempts:
                time.sleep(random.uniform(0.005, 0.02) * 2 ** min(attempt, 6))
                continue
            raise
    raise AssertionError("unreachable")
