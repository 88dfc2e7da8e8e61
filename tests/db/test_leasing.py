"""The leasing protocol at the store level, in-process, on every configured database.

What is proven here is what the crash guarantees of the process-level tests rest on:
leasing hands each due task to exactly one owner, every later write is fenced by the
lease, rescue is conditional, and release gives a lease back without spending an attempt.
"""
from __future__ import annotations

import datetime as dt
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import gta_core
from gta_core.db.connect import drop_connection, open_database
from gta_core.store.task_store import TaskStore

from ..support.helpers import Env, wait_for
from ..support.leases import _expire, _row, _submit

QUEUES = ("default",)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def test_lease_returns_due_tasks_running_with_attempt_and_owner(env: Env) -> None:
    store = env.store
    low = _submit(2)
    high = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 99}, priority=5)
    later = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 100}, delay=3600)
    elsewhere = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 101}, queue="other")

    before = _now()
    leased = store.lease("owner-a", QUEUES, 10, 30.0)
    after = _now()

    assert [task.id for task in leased] == [high, *low]  # priority desc, then run_at, id
    for task in leased:
        assert (task.status, task.attempts, task.lease_owner) == ("running", 1, "owner-a")
        row = _row(env, task.id)
        assert (row["status"], row["attempts"], row["lease_owner"]) == ("running", 1, "owner-a")
        expires = row["lease_expires_at"]
        assert before + dt.timedelta(seconds=29) <= expires <= after + dt.timedelta(seconds=31), expires
        assert row["started_at"] is not None
    for task_id in (later, elsewhere):
        row = _row(env, task_id)
        assert (row["status"], row["attempts"], row["lease_owner"]) == ("pending", 0, None)
    assert store.lease("owner-b", QUEUES, 10, 30.0) == []  # nothing else is due on these queues
    assert [task.id for task in store.lease("owner-b", ("other",), 10, 30.0)] == [elsewhere]


def test_lease_respects_limit(env: Env) -> None:
    ids = _submit(5)
    first = env.store.lease("owner-a", QUEUES, 2, 30.0)
    second = env.store.lease("owner-b", QUEUES, 10, 30.0)
    assert len(first) == 2 and len(second) == 3
    assert sorted(task.id for task in first + second) == ids


@pytest.mark.parametrize("connections", ["thread-local", "separate-databases"])
def test_concurrent_owners_never_lease_the_same_task(env: Env, connections: str) -> None:
    ids = _submit(240)
    owners = 4
    rounds = 240 // (owners * 7) + 2
    barrier = threading.Barrier(owners)

    def drain(index: int) -> list[int]:
        if connections == "thread-local":
            store = env.store  # one Database object; peewee gives each thread its own connection
            db = store.db
        else:
            db = open_database(env.db_url)
            store = TaskStore(db, env.table)
        try:
            got: list[int] = []
            for _ in range(rounds):  # every round, all owners lease at the same moment
                barrier.wait(timeout=30)
                got += [task.id for task in store.lease(f"owner-{index}", QUEUES, 7, 30.0)]
            return got
        finally:
            drop_connection(db)

    with ThreadPoolExecutor(owners) as pool:
        results = list(pool.map(drain, range(owners)))

    leased = [task_id for result in results for task_id in result]
    assert len(leased) == len(set(leased)), "a task was leased by two owners"
    assert sorted(leased) == ids
    assert all(results), "an owner got nothing: the owners did not compete"
    for index, result in enumerate(results):
        for task_id in result[:5]:
            row = _row(env, task_id)
            assert (row["lease_owner"], row["attempts"]) == (f"owner-{index}", 1)


def test_lost_lease_is_fenced_and_rescue_counts_the_attempt(env: Env) -> None:
    store = env.store
    (task_id,) = _submit(1)
    (leased,) = store.lease("owner-a", QUEUES, 1, 30.0)
    assert leased.id == task_id
    assert store.rescue_expired() == []  # a live lease is never rescued

    _expire(store, [task_id])
    rescued = store.rescue_expired()
    assert [(task.id, task.status, task.attempts, task.lease_owner) for task in rescued] == \
        [(task_id, "pending", 1, None)]
    row = _row(env, task_id)
    assert (row["status"], row["attempts"], row["lease_owner"], row["lease_expires_at"]) == ("pending", 1, None, None)
    assert "lease expired" in row["last_error"] and "owner-a" in row["last_error"]
    assert store.rescue_expired() == []

    (again,) = store.lease("owner-b", QUEUES, 1, 30.0)
    assert (again.id, again.attempts, again.lease_owner) == (task_id, 2, "owner-b")
    held = _row(env, task_id)

    # owner A comes back from a long pause: every write it attempts is rejected, nothing changes
    assert store.complete("owner-a", task_id) is False
    assert store.retry("owner-a", task_id, 0.0, "late error") is False
    assert store.fail("owner-a", task_id, "late failure") is False
    assert store.heartbeat("owner-a", [task_id], 3600.0) == 0
    assert store.release("owner-a", [task_id]) == 0
    assert store.release("owner-a") == 0
    assert _row(env, task_id) == held

    assert store.heartbeat("owner-b", [task_id], 60.0) == 1
    assert store.complete("owner-b", task_id) is True
    row = _row(env, task_id)
    assert (row["status"], row["attempts"], row["lease_owner"]) == ("succeeded", 2, "owner-b")
    assert row["finished_at"] is not None and row["lease_expires_at"] is None
    assert store.complete("owner-b", task_id) is False  # a second outcome write is fenced too
    assert store.fail("owner-b", task_id, "too late") is False
    assert _row(env, task_id)["status"] == "succeeded"


def test_lease_expires_on_the_database_clock(env: Env) -> None:
    store = env.store
    (task_id,) = _submit(1)
    store.lease("owner-a", QUEUES, 1, 0.2)
    rescued = wait_for(store.rescue_expired, 10, "the 0.2 s lease to expire and be rescued")
    assert [(task.id, task.status) for task in rescued] == [(task_id, "pending")]
    (again,) = store.lease("owner-b", QUEUES, 1, 30.0)
    assert again.attempts == 2
    assert store.complete("owner-a", task_id) is False
    assert store.complete("owner-b", task_id) is True


def test_rescue_fails_a_task_out_of_attempts(env: Env) -> None:
    store = env.store
    one, two = _submit(1, max_attempts=1) + _submit(1, max_attempts=2)
    store.lease("owner-a", QUEUES, 2, 30.0)
    _expire(store, [one, two])
    rescued = {task.id: (task.status, task.attempts) for task in store.rescue_expired()}
    assert rescued == {one: ("failed", 1), two: ("pending", 1)}
    row = _row(env, one)
    assert row["status"] == "failed" and row["finished_at"] is not None and row["lease_owner"] is None
    assert "lease expired" in row["last_error"]
    assert _row(env, two)["finished_at"] is None

    (second,) = store.lease("owner-b", QUEUES, 10, 30.0)  # the failed one is never leased again
    assert (second.id, second.attempts) == (two, 2)
    _expire(store, [two])
    assert [(task.id, task.status, task.attempts) for task in store.rescue_expired()] == [(two, "failed", 2)]
    assert store.lease("owner-c", QUEUES, 10, 30.0) == []
    assert store.complete("owner-b", two) is False
    assert _row(env, two)["status"] == "failed"


def test_rescue_never_clobbers_an_outcome(env: Env) -> None:
    store = env.store
    done, retried = _submit(2)
    store.lease("owner-a", QUEUES, 2, 30.0)
    _expire(store, [done, retried])
    # the owner records its outcomes before any supervisor rescued the expired leases
    assert store.complete("owner-a", done) is True
    assert store.retry("owner-a", retried, 3600.0, "boom") is True
    assert store.rescue_expired() == []
    assert _row(env, done)["status"] == "succeeded"
    row = _row(env, retried)
    assert (row["status"], row["attempts"], row["last_error"]) == ("pending", 1, "boom")


def test_rescue_skips_a_row_another_transaction_holds(env: Env) -> None:
    """A silent host's open transaction holding one expired row (until its server ends the
    session) must not stall the rescue of the others: that row is skipped for the next round."""
    store = env.store
    if store.dialect == "sqlite":
        pytest.skip("SQLite locks the whole database, never one row")
    locked, free = _submit(2)
    store.lease("owner-a", QUEUES, 2, 30.0)
    _expire(store, [locked], 3600.0)
    _expire(store, [free], 1800.0)  # the locked row comes first in the rescue's order
    holder = open_database(env.db_url)
    try:
        with holder.atomic():
            holder.execute_sql(store.sql.dialect.fix(f"SELECT id FROM {store.table} WHERE id = ? FOR UPDATE"),
                               (locked,))
            started = time.monotonic()
            rescued = store.rescue_expired()
            took = time.monotonic() - started
        assert [task.id for task in rescued] == [free]
        assert took < 1.0, f"the rescue waited {took:.1f}s on a row lock"
        assert [task.id for task in store.rescue_expired()] == [locked]  # the next round takes it
    finally:
        holder.close()


def test_a_stale_success_write_never_locks_the_new_holders_row(env: Env) -> None:
    """A worker whose lease was taken over writes its success late, from a host that is then
    cut off with that transaction open: the row's new holder must still renew it at once (on
    MariaDB a locking read of the stale batch kept the row locked, and stalled the new
    holder's heartbeats until the silent session ended)."""
    store = env.store
    if store.dialect == "sqlite":
        pytest.skip("SQLite locks the whole database, never one row")
    stolen, kept = _submit(2)
    store.lease("owner-a", QUEUES, 2, 30.0)
    _expire(store, [stolen])
    assert [task.id for task in store.rescue_expired()] == [stolen]
    assert [task.id for task in store.lease("owner-b", QUEUES, 1, 30.0)] == [stolen]
    other = TaskStore(open_database(env.db_url), store.table)
    try:
        with store.db.atomic():  # the stale write's transaction, left open
            assert store.complete_many("owner-a", [stolen, kept], [1, 1]) == {kept}
            started = time.monotonic()
            assert other.heartbeat("owner-b", [stolen], 30.0) == 1
            took = time.monotonic() - started
        assert took < 0.5, f"the new holder's heartbeat waited {took:.1f}s on the stale write's lock"
    finally:
        other.db.close()


def test_release_returns_tasks_without_counting_the_attempt(env: Env) -> None:
    store = env.store
    a1, a2, a3, b1 = _submit(4)
    assert len(store.lease("owner-a", QUEUES, 3, 30.0)) == 3
    assert len(store.lease("owner-b", QUEUES, 3, 30.0)) == 1
    assert {a1, a2, a3} == {task.id for task in store.owned("owner-a")}

    assert store.release("owner-a", [a1, b1]) == 1  # b1 is not owner-a's: left alone
    row = _row(env, a1)
    assert (row["status"], row["attempts"], row["lease_owner"], row["lease_expires_at"]) == ("pending", 0, None, None)
    assert _row(env, b1)["lease_owner"] == "owner-b"

    assert store.complete("owner-a", a2) is True
    assert store.release("owner-a") == 1  # all of owner-a's running leases: just a3
    assert (_row(env, a3)["status"], _row(env, a3)["attempts"]) == ("pending", 0)
    assert _row(env, a2)["status"] == "succeeded"
    assert store.owned("owner-a") == []
    assert store.release("owner-a", []) == 0

    again = {task.id: task.attempts for task in store.lease("owner-c", QUEUES, 10, 30.0)}
    assert again == {a1: 1, a3: 1}  # released tasks are due again, first attempt still unspent


def test_heartbeat_extends_only_the_owners_running_leases(env: Env) -> None:
    store = env.store
    a1, a2, a3, b1 = _submit(4)
    store.lease("owner-a", QUEUES, 3, 5.0)
    store.lease("owner-b", QUEUES, 1, 5.0)
    assert store.complete("owner-a", a3) is True
    before = {task_id: _row(env, task_id) for task_id in (a1, a2, a3, b1)}

    start = _now()
    assert store.heartbeat("owner-a", [a1, a2, a3, b1], 600.0) == 2
    end = _now()
    for task_id in (a1, a2):
        expires = _row(env, task_id)["lease_expires_at"]
        assert start + dt.timedelta(seconds=590) <= expires <= end + dt.timedelta(seconds=610), expires
    assert _row(env, b1) == before[b1]  # another owner's lease: untouched
    assert _row(env, a3) == before[a3]  # a finished task: untouched
    assert store.heartbeat("owner-a", [], 600.0) == 0
    assert store.heartbeat("owner-b", [b1], 600.0) == 1
