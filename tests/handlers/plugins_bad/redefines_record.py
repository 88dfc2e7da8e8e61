"""A second ``record`` task, clashing with the one in tests.handlers.tasks."""
from __future__ import annotations

from typing import Any

from gta_core import TaskContext, hookimpl, task


@task
def record(ctx: TaskContext, n: int = 0) -> None:
    pass


@hookimpl
def gta_handlers() -> list[Any]:
    return [record]
