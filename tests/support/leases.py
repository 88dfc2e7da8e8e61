"""Shortcuts of the store-level leasing tests, shared with the prefetch tests: submit a few
tasks, push leases into the past on the database's own clock, read a row."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gta_core
from gta_core.store.task_store import TaskStore

from .helpers import Env


def _submit(count: int, key: str = "record", **options: Any) -> list[int]:
    return gta_core.submit_many(gta_core.OWN_TRANSACTION,
                                [gta_core.TaskRequest(key, {"n": n}, **options) for n in range(count)])


def _expire(store: TaskStore, ids: Sequence[int], seconds: float = 3600.0) -> None:
    """Push the leases of ``ids`` ``seconds`` (an hour) into the past, on the database's own clock."""
    d = store.sql.dialect
    marks = ", ".join("?" * len(ids))
    statement = d.fix(f"UPDATE {store.table} SET lease_expires_at = {d.now_plus()} WHERE id IN ({marks})")
    store._write(statement, (d.seconds_param(-seconds), *ids))


def _row(env: Env, task_id: int) -> dict[str, Any]:
    row = env.store.get(task_id)
    assert row is not None, f"task {task_id} vanished"
    return row
