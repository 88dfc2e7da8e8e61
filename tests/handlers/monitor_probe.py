"""Test plugin for the monitor and cleanup built-ins, loaded by worker processes as
``tests.handlers.monitor_probe``: writes each ``gta_abnormal_tasks`` call and each start of a built-in
task to the ledger (``GTA_TEST_LEDGER``), one JSON line each.

With ``GTA_TEST_MONITOR_HANG=PATH`` the first call anywhere (the one that creates PATH) hangs
instead of reporting, as a monitor stuck on a slow plugin would.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

from gta_core import hookimpl

BUILTIN_KEYS = ("gta_monitor", "gta_cleanup")


def write(entry: dict[str, Any]) -> None:
    path = os.environ.get("GTA_TEST_LEDGER")
    if not path:
        return
    line = json.dumps({"id": 0, "pid": os.getpid(), "t": time.time(), **entry}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _first_caller(marker: str) -> bool:
    try:
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        return False
    return True


@hookimpl
def gta_abnormal_tasks(kind: str, tasks: list[Any]) -> None:
    ids = sorted(task["id"] for task in tasks)
    marker = os.environ.get("GTA_TEST_MONITOR_HANG")
    if marker and _first_caller(marker):
        write({"phase": "hang", "kind": kind, "ids": ids})
        time.sleep(3600)  # until the task's timeout kills this worker
    write({"phase": "abnormal", "kind": kind, "ids": ids})


@hookimpl
def gta_task_event(event: str, task: Any, error: BaseException | None, duration: float | None) -> None:
    if event == "started" and task.key in BUILTIN_KEYS:
        write({"phase": f"started {task.key}", "id": task.id, "attempt": task.attempts})
