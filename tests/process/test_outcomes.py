"""Rescue through the outcome rule (`gta_core.outcomes`) in a real supervisor, on each database:
an expired lease is rescued as a failed attempt and gets the retry policy's backoff (the rule's
table, case by case, is tests/unit/test_outcomes.py)."""
from __future__ import annotations

import datetime as dt
from typing import Any

import gta_core

from ..support.helpers import Env, wait_for


def test_a_rescued_attempt_gets_the_policys_backoff(env: Env) -> None:
    """A lease nobody renews is rescued as a failed attempt: pending again after the retry
    policy's delay (here retry_base 40 s: between 20 and 40 s), not due at once."""
    store = env.store
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1})
    (leased,) = store.lease("vanished-worker", ["default"], 1, 0.5)
    assert leased.id == task_id
    process = env.supervisor(1, extra_env={"GTA_RETRY_BASE": "40", "GTA_RETRY_CAP": "600"})

    def rescued() -> dict[str, Any] | None:
        row = store.get(task_id)
        return row if row and row["status"] == "pending" else None
    row = wait_for(rescued, 30, "the expired lease to be rescued")
    assert row["attempts"] == 1 and row["lease_owner"] is None
    assert row["last_error"].startswith("lease expired: worker vanished-worker")
    backoff = (_moment(row["run_at"]) - _moment(row["updated_at"])).total_seconds()
    assert 19 <= backoff <= 41, f"rescued task due {backoff:.1f}s after its rescue, not after the policy's backoff"
    wait_for(lambda: "lease expired" in process.log(), 10, "the rescue's log line")  # written after its commit


def _moment(value: Any) -> dt.datetime:
    """A timestamp column as a naive UTC datetime (SQLite returns text)."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=None)

