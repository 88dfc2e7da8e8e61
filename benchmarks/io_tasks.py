"""The I/O-bound benchmark's handler (plugin ``benchmarks.io_tasks``, loaded only by io_bound.py:
a worker with an async handler runs an event loop, which the other benchmarks must not measure)."""
from __future__ import annotations

import asyncio
from typing import Any

from gta_core import TaskContext, hookimpl, task


@task
async def bench_io_sleep(ctx: TaskContext, seconds: float = 0.02) -> None:
    """Waits ``seconds`` on the event loop, as a task waiting on a network reply does."""
    await asyncio.sleep(seconds)


@hookimpl
def gta_handlers() -> list[Any]:
    return [bench_io_sleep]
