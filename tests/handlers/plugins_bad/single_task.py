"""gta_handlers() returns one task instead of a list of them (a common slip)."""
from __future__ import annotations

from typing import Any

from gta_core import TaskContext, hookimpl, task


@task
def lonely(ctx: TaskContext) -> None:
    pass


@hookimpl
def gta_handlers() -> Any:
    return lonely
