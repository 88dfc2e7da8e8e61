"""Handlers for the benchmarks (loaded by workers as the plugin ``benchmarks.bench_tasks``)."""
from __future__ import annotations

import os
import time
from typing import Any

from gta_core import Retry, TaskContext, hookimpl, task


@task
def bench_noop(ctx: TaskContext) -> None:
    """Does nothing: measures the framework, not the handler."""


@task
def bench_fail_once(ctx: TaskContext) -> None:
    """Asks for an immediate retry on its first attempt, then does nothing: the failing path's
    writes (a retry and its attempt log entry), then a success."""
    if ctx.attempt == 1:
        raise Retry(delay=0)


@task
def bench_numbered(ctx: TaskContext, n: int) -> None:
    """Does nothing with one argument: batches whose rows differ (see submit.py)."""


@task
def bench_stamp(ctx: TaskContext) -> None:
    """Appends ``task_id start_time pid`` to $GTA_BENCH_LEDGER (one atomic O_APPEND write)."""
    line = f"{ctx.task_id} {time.time():.6f} {os.getpid()}\n".encode()
    fd = os.open(os.environ["GTA_BENCH_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@task
def bench_sleep(ctx: TaskContext, seconds: float) -> None:
    """Sleeps ``seconds``: a task of a known length (short_behind_long.py)."""
    time.sleep(seconds)


@hookimpl
def gta_handlers() -> list[Any]:
    return [bench_noop, bench_fail_once, bench_numbered, bench_stamp, bench_sleep]
