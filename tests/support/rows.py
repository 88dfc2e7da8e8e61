"""Making task rows in a given state, in this process, for the admin and cleanup tests.

Rows reach their state through the store's own writes (lease, complete, fail, cancel), as a
worker would put them there; only ages are set by hand (`age`), on the database's clock.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gta_core
from gta_core.outcomes import describe_error

from .helpers import Env

OWNER = "test-owner"


def make(env: Env, outcome: str, key: str = "record", args: dict[str, Any] | None = None,
         queue: str = "default", error: str = "boom") -> int:
    """One task in state ``outcome`` (pending, running, succeeded, failed or cancelled); its id.

    Leases the task itself, so no other task of ``queue`` may be due when this is called.
    """
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION,
                              key, {"n": 0} if args is None and key == "record" else args, queue=queue)
    if outcome == "pending":
        return task_id
    leased = env.store.lease(OWNER, (queue,), 1, 60.0)
    assert [task.id for task in leased] == [task_id], "another task of this queue was due"
    if outcome == "succeeded":
        assert env.store.complete(OWNER, task_id)
    elif outcome == "failed":
        try:
            raise ValueError(error)
        except ValueError as exc:
            assert env.store.fail(OWNER, task_id, describe_error(exc))
    elif outcome == "cancelled":
        gta_core.cancel(task_id)
    else:
        assert outcome == "running", outcome
    return task_id


def age(env: Env, ids: Sequence[int], column: str, seconds: float) -> None:
    """Set ``column`` of ``ids`` to ``seconds`` before now on the database's clock."""
    store = env.store
    d = store.sql.dialect
    marks = ", ".join("?" * len(ids))
    store._write(d.fix(f"UPDATE {store.table} SET {column} = {d.now_plus()} WHERE id IN ({marks})"),
                 (d.seconds_param(-seconds), *ids))


def finished_long_ago(env: Env, count: int, days: float = 30, queue: str = "archive") -> None:
    """``count`` succeeded tasks of ``queue`` that finished ``days`` ago (portable, for thousands)."""
    gta_core.submit_many(gta_core.OWN_TRANSACTION,
                         [gta_core.TaskRequest("record", {"n": n}, queue=queue) for n in range(count)])
    store = env.store
    d = store.sql.dialect
    store._write(d.fix(f"UPDATE {store.table} SET status = 'succeeded', attempts = 1, started_at = {d.now_plus()}, "
                       f"finished_at = {d.now_plus()}, updated_at = {d.now_plus()} WHERE queue = ?"),
                 (*[d.seconds_param(-days * 86400)] * 3, queue))


def count(env: Env, where: str = "", params: Sequence[Any] = ()) -> int:
    store = env.store
    sql = f"SELECT COUNT(*) FROM {store.table}" + (f" WHERE {where}" if where else "")
    return int(store.db.execute_sql(store.sql.dialect.fix(sql), tuple(params)).fetchone()[0])


def row_count(env: Env) -> int:
    return env.runtime.db.execute_sql(f"SELECT COUNT(*) FROM {env.table}").fetchone()[0]
