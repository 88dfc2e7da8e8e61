"""Starting and stopping real supervisors and reading what their workers did (the ledger of
the handlers in `tests.handlers.tasks`): shared by the process tests."""
from __future__ import annotations

import signal
from typing import Any

from .helpers import Env, SupervisorProcess, wait_for, wait_log

SERVING = "serving queues"  # a worker logs this once it is booted and about to lease
FINAL = {"succeeded", "failed", "cancelled"}


def start(env: Env, workers: int, *args: str, **options: Any) -> SupervisorProcess:
    """A supervisor whose workers are all booted (not just forked)."""
    process = env.supervisor(workers, *args, **options)
    wait_log(process, SERVING, workers)
    return process


def stop(process: SupervisorProcess, timeout: float = 30.0) -> int:
    process.signal(signal.SIGTERM)
    return process.wait(timeout)


def entries(env: Env, phase: str | None = None, task_id: int | None = None) -> list[dict[str, Any]]:
    return [entry for entry in env.ledger_entries()
            if (phase is None or entry["phase"] == phase) and (task_id is None or entry["id"] == task_id)]


def wait_entries(env: Env, phase: str, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    def enough() -> list[dict[str, Any]] | None:
        found = entries(env, phase)
        return found if len(found) >= count else None
    return wait_for(enough, timeout, f"{count} ledger entries {phase!r}")


def row(env: Env, task_id: int) -> dict[str, Any]:
    found = env.store.get(task_id)
    assert found is not None, f"task {task_id} vanished"
    return found
