"""Handlers with global limits, imported by worker processes as the plugin ``tests.handlers.limit_tasks``
(only by the tests of limits: a supervisor that registers them writes their limits, and every
lease on that table then goes through the limited path). Each writes the ledger of `tests.handlers.tasks`."""
from __future__ import annotations

import time
from typing import Any

from gta_core import TaskContext, hookimpl, task

from .tasks import _ledger


@task(max_attempts=3, concurrency=3)
def capped(ctx: TaskContext, seconds: float, n: int = 0) -> None:
    """At most 3 run at once across every supervisor: writes 'start', sleeps, writes 'end'."""
    _ledger(ctx, "start", n=n)
    time.sleep(seconds)
    _ledger(ctx, "end", n=n)


@task(max_attempts=3, concurrency=1, concurrency_key="customer")
def per_customer(ctx: TaskContext, customer: str, seconds: float, n: int = 0) -> None:
    """At most one per customer at once."""
    _ledger(ctx, "start", n=n, customer=customer)
    time.sleep(seconds)
    _ledger(ctx, "end", n=n, customer=customer)


@task(max_attempts=3, rate_limit="5/s")
def rated(ctx: TaskContext, n: int = 0) -> None:
    """At most 5 starts per second (fixed windows)."""
    _ledger(ctx, "start", n=n)


@task(max_attempts=3, concurrency=1)
def solo(ctx: TaskContext, seconds: float) -> None:
    """One at a time; sleeps ``seconds`` on its first attempt only (a rescued re-run ends at once)."""
    _ledger(ctx, "start")
    if ctx.attempt == 1:
        time.sleep(seconds)
    _ledger(ctx, "end")


@hookimpl
def gta_handlers() -> list[Any]:
    return [capped, per_customer, rated, solo]
