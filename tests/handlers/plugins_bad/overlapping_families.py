"""Defines the families ``reports:*`` and ``reports:daily:*``, of which one contains the other:
loading it must fail."""
from __future__ import annotations

from typing import Any

from gta_core import TaskContext, hookimpl, task


@task(key="reports:*")
def reports(ctx: TaskContext) -> None:
    pass


@task(key="reports:daily:*")
def daily(ctx: TaskContext) -> None:
    pass


@hookimpl
def gta_handlers() -> list[Any]:
    return [reports, daily]
