"""Defines ``clash_key``; so does `clash_b`: loading both must fail."""
from __future__ import annotations

from typing import Any

from gta_core import TaskContext, hookimpl, task


@task(key="clash_key")
def first(ctx: TaskContext) -> None:
    pass


@hookimpl
def gta_handlers() -> list[Any]:
    return [first]
