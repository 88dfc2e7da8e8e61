"""``gta_core.status(task_id)``: a task's state read from Python, on every database."""
from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

import gta_core

from ..support import rows
from ..support.helpers import Env


def test_status_follows_a_task_through_its_states(env: Env) -> None:
    with env.runtime.db.atomic() as tx:
        task_id = gta_core.submit(tx, "record", {"n": 1}, priority=3, dedupe_key="d-1", order_key="o-1")
        assert gta_core.status(task_id, db=tx) is not None  # the caller's transaction sees its own row
    state = gta_core.status(task_id)
    assert isinstance(state, gta_core.TaskState)
    assert (state.id, state.key, state.queue, state.status, state.attempts, state.max_attempts, state.priority,
            state.dedupe_key, state.order_key, state.parent_id, state.last_error) == (
        task_id, "record", "default", "pending", 0, 3, 3, "d-1", "o-1", None, None)
    assert not state.final and state.started_at is None and state.finished_at is None
    now = dt.datetime.now(dt.timezone.utc)
    for moment in (state.run_at, state.created_at, state.updated_at):
        assert moment is not None and moment.tzinfo is not None and abs(moment - now) < dt.timedelta(minutes=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.status = "succeeded"  # type: ignore[misc]

    failed = gta_core.status(rows.make(env, "failed", queue="elsewhere", error="it broke"))
    assert failed is not None and failed.status == "failed" and failed.final and failed.attempts == 1
    assert failed.last_error is not None and "it broke" in failed.last_error
    assert failed.started_at is not None and failed.finished_at is not None


def test_status_of_an_unknown_id_is_none_and_a_bad_id_is_refused(env: Env) -> None:
    assert gta_core.status(987654321) is None
    for bad in ("12", 2**63, True, 1.5):
        with pytest.raises(gta_core.GTAError, match="64-bit integers"):
            gta_core.status(bad)  # type: ignore[arg-type]
