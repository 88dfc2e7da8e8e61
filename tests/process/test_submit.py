"""Transactional submit, end to end: a supervisor runs the committed tasks, each once, and never
one whose transaction or savepoint rolled back (the submit itself, in process, is
tests/db/test_submit.py)."""
from __future__ import annotations

import signal

import pytest

import gta_core

from ..support.helpers import Env
from ..support.rows import row_count


class Boom(Exception):
    """Raised to roll a transaction back."""


def test_only_committed_tasks_run(env: Env) -> None:
    db = env.runtime.db
    with db.atomic() as tx:
        committed = [gta_core.submit(tx, "record", {"n": n}) for n in (1, 2)]
        with pytest.raises(Boom):
            with db.atomic() as inner:
                gta_core.submit(inner, "record", {"n": 100})
                raise Boom
    with pytest.raises(Boom):
        with db.atomic() as tx:
            gta_core.submit(tx, "record", {"n": 200})
            raise Boom
    with db.atomic() as tx:
        committed.append(gta_core.submit(tx, "record", {"n": 3}))
    supervisor = env.supervisor(1)
    assert set(env.wait_final(committed).values()) == {"succeeded"}
    assert env.runs_by_task() == {task_id: 1 for task_id in committed}
    assert sorted(entry["n"] for entry in env.ledger_entries()) == [1, 2, 3]
    assert row_count(env) == 3
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0
    assert sorted(entry["n"] for entry in env.ledger_entries()) == [1, 2, 3]
