"""Test plugin: a third-party monitor replacing the built-in one (run with ``--disable-plugin monitor``)."""
from __future__ import annotations

from typing import Any

from gta_core import TaskContext, hookimpl, periodic, task


@task(key="gta_monitor", max_attempts=1, timeout=5)
def my_monitor(ctx: TaskContext) -> None:
    ctx.logger.info("my own monitor ran")


@hookimpl
def gta_handlers() -> list[Any]:
    return [my_monitor]


@hookimpl
def gta_periodic() -> list[Any]:
    return [periodic("monitor", key="gta_monitor", every=5)]
