"""Defines ``clash_key`` too (see `clash_a`)."""
from __future__ import annotations

from typing import Any

from gta_core import TaskContext, hookimpl, task


@task(key="clash_key")
def second(ctx: TaskContext, x: int = 0) -> None:
    pass


@hookimpl
def gta_handlers() -> list[Any]:
    return [second]
