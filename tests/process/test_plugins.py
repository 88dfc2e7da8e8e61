"""A real supervisor runs a task of a plugin found only through its entry point (the plugin
manager itself is tests/unit/test_plugins.py)."""
from __future__ import annotations

import signal

import gta_core

from ..support.helpers import Env
from ..support.plugins import NOT_INSTALLED


def test_supervisor_runs_entry_point_task(env: Env) -> None:
    # env sets GTA_PLUGINS=tests.handlers.tasks only: example_double must come from the entry point
    assert "example_double" in env.runtime.plugins.registry.tasks, NOT_INSTALLED
    with env.runtime.db.atomic() as tx:
        task_id = gta_core.submit(tx, "example_double", {"x": 21})
    supervisor = env.supervisor(1)
    assert env.wait_final([task_id]) == {task_id: "succeeded"}
    entries = [entry for entry in env.ledger_entries() if entry["id"] == task_id]
    assert len(entries) == 1, entries
    assert entries[0]["key"] == "example_double" and entries[0]["result"] == 42
    assert entries[0]["pid"] in supervisor.worker_pids()
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0
