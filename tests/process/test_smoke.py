from __future__ import annotations

import signal

import gta_core

from ..support.helpers import Env


def test_commit_runs_exactly_once(env: Env) -> None:
    db = env.runtime.db
    with db.atomic() as tx:
        ids = [gta_core.submit(tx, "record", {"n": n}) for n in range(5)]
    supervisor = env.supervisor(2)
    assert set(env.wait_final(ids).values()) == {"succeeded"}
    assert env.runs_by_task() == {task_id: 1 for task_id in ids}
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0
