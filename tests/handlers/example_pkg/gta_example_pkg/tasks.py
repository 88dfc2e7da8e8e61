"""The example plugin's task: doubles a number and appends the result to the test ledger.

Like ``tests/handlers/tasks.py``, each execution appends one line to the file named by
``GTA_TEST_LEDGER`` (one short O_APPEND write is atomic), so tests can see that a worker
process ran it.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

from gta_core import TaskContext, hookimpl, task


@task(max_attempts=2)
def example_double(ctx: TaskContext, x: int) -> int:
    result = 2 * x
    path = os.environ.get("GTA_TEST_LEDGER")
    if path:
        line = json.dumps({"id": ctx.task_id, "attempt": ctx.attempt, "pid": os.getpid(), "phase": "run",
                           "t": time.time(), "key": ctx.key, "x": x, "result": result}) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    return result


@hookimpl
def gta_handlers() -> list[Any]:
    return [example_double]
