"""Handlers for the tracing tests (``tests/process/test_otel.py``), loaded as the plugin ``tests.handlers.otel_tasks``.

They open spans of their own through the OpenTelemetry API, as an application's code would, to
show that those nest under the attempt's ``process`` span.
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from opentelemetry import trace

from gta_core import TaskContext, hookimpl, task

from .tasks import append_record

tracer = trace.get_tracer("shop.tasks")


@task(max_attempts=3)
def charge(ctx: TaskContext, order: int, failures: int = 1) -> None:
    """Fails on its first ``failures`` attempts."""
    with tracer.start_as_current_span("charge card"):
        if ctx.attempt <= failures:
            raise RuntimeError("card declined")


@task(max_attempts=1)
def ship(ctx: TaskContext, order: int) -> None:
    """Submits a child task."""
    with tracer.start_as_current_span("book courier"):
        ctx.submit("notify", {"order": order})


@task(max_attempts=1)
def notify(ctx: TaskContext, order: int) -> None:
    pass


@task(max_attempts=1)
def pick(ctx: TaskContext, item: str) -> str:
    return item


@task(max_attempts=1)
def pack(ctx: TaskContext, group: list[dict[str, Any]]) -> int:
    """A group's callback."""
    return len(group)


@task(max_attempts=2)
def stall(ctx: TaskContext) -> None:
    """On its first attempt, writes its worker's pid to the ledger and waits to be killed."""
    if ctx.attempt == 1:
        append_record(os.environ["GTA_TEST_LEDGER"], {"id": ctx.task_id, "pid": os.getpid(), "phase": "stall"})
        time.sleep(120)


@task(max_attempts=2, timeout=0.5)
async def quote(ctx: TaskContext) -> None:
    """An async handler: its first attempt overruns its timeout, its second opens a span."""
    if ctx.attempt == 1:
        await asyncio.sleep(30)
    with tracer.start_as_current_span("fetch quote"):
        await asyncio.sleep(0)


@task(max_attempts=1)
def linger(ctx: TaskContext) -> None:
    """Writes its start to the ledger, then runs until it is cancelled, and returns."""
    append_record(os.environ["GTA_TEST_LEDGER"], {"id": ctx.task_id, "pid": os.getpid(), "phase": "linger"})
    ctx.cancel_event.wait(60)
    append_record(os.environ["GTA_TEST_LEDGER"], {"id": ctx.task_id, "pid": os.getpid(), "phase": "lingered"})


@hookimpl
def gta_handlers() -> list[Any]:
    return [charge, ship, notify, pick, pack, stall, quote, linger]
