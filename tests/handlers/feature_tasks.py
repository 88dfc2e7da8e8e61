"""Handlers for tests/process/test_features.py, imported by worker processes as the plugin
``tests.handlers.feature_tasks``.

Like tests/handlers/tasks.py, every handler appends to the ledger file named by ``GTA_TEST_LEDGER``,
so tests see executions across processes without asking the database under test.

``GTA_TEST_PERIODIC`` picks the periodic tasks this plugin declares (none by default), so
only the supervisors of the periodic tests schedule anything:
``tick`` (every second), ``cron`` (every minute, cron only), and the refused ``bad_key`` (an
unknown task key), ``bad_args`` (arguments the handler does not take) and ``clean_succeeded``
(a task whose row would be deleted, and with it the slot's dedupe memory).
"""
from __future__ import annotations

import os
import time
from typing import Any

from gta_core import Fail, Retry, TaskContext, hookimpl, periodic, task
from gta_plugins.request_id import request_id

from .tasks import _ledger


@task(queue="b")
def in_b(ctx: TaskContext, n: int = 0) -> None:
    """Lives in queue ``b`` unless its submitter says otherwise."""
    _ledger(ctx, "run", n=n, queue=ctx.queue)


@task(priority=7)
def urgent(ctx: TaskContext, n: int = 0) -> None:
    """Priority 7 unless its submitter says otherwise."""
    _ledger(ctx, "run", n=n)


@task(max_attempts=3)
def chain_link(ctx: TaskContext, chain: str | None, seq: int, seconds: float = 0.02, fail: str | None = None) -> None:
    """One link of an order-key chain: 'start', sleep, 'end'; then maybe fail.

    ``fail="once"`` raises on the first attempt (retried), ``fail="for_good"`` raises `Fail`.
    """
    _ledger(ctx, "start", chain=chain, seq=seq)
    time.sleep(seconds)
    _ledger(ctx, "end", chain=chain, seq=seq)
    if fail == "once" and ctx.attempt == 1:
        raise RuntimeError(f"link {chain}/{seq} fails once")
    if fail == "for_good":
        raise Fail(f"link {chain}/{seq} fails for good")


@task(max_attempts=4)
def parent(ctx: TaskContext, failures: int, how: str = "error", children: int = 3) -> None:
    """Buffers ``children`` child tasks on every attempt, then fails its first ``failures`` attempts
    (``how``: ``error`` raises RuntimeError, ``retry`` raises Retry, ``fail`` raises Fail)."""
    for index in range(children):
        ctx.submit("child", {"index": index, "parent_attempt": ctx.attempt})
    _ledger(ctx, "parent")
    if ctx.attempt <= failures:
        if how == "retry":
            raise Retry(delay=0)
        if how == "fail":
            raise Fail("parent gave up")
        raise RuntimeError(f"parent fails attempt {ctx.attempt}")


@task(max_attempts=1)
def child(ctx: TaskContext, index: int, parent_attempt: int) -> None:
    _ledger(ctx, "child", index=index, parent_attempt=parent_attempt)


@task(timeout=1, max_attempts=2)
def overrun(ctx: TaskContext) -> None:
    """Sleeps far past its 1 s timeout."""
    _ledger(ctx, "start")
    time.sleep(60)
    _ledger(ctx, "end")


@task(max_attempts=3)
def cooperative(ctx: TaskContext, linger: float = 0.0) -> None:
    """Works in small steps until it is cancelled, then lingers a while and returns."""
    _ledger(ctx, "start")
    deadline = time.monotonic() + 30
    while not ctx.cancelled and time.monotonic() < deadline:
        time.sleep(0.02)
    if ctx.cancelled:
        _ledger(ctx, "saw_cancel")
        time.sleep(linger)
    _ledger(ctx, "end")


@task(max_attempts=3)
def stubborn(ctx: TaskContext) -> None:
    """Ignores cancellation."""
    _ledger(ctx, "start")
    time.sleep(60)
    _ledger(ctx, "end")


@task(max_attempts=1)
def tick(ctx: TaskContext) -> None:
    _ledger(ctx, "tick")


@task(max_attempts=1)
def log_request(ctx: TaskContext, spawn: bool = False) -> None:
    """Records the request id it sees, logs a line, and maybe submits a child like itself."""
    _ledger(ctx, "request", request_id=request_id.get())
    ctx.logger.info("handling task %d", ctx.task_id)
    if spawn:
        ctx.submit("log_request")


@task(clean_succeeded=True, max_attempts=1)
def clean_ok(ctx: TaskContext, fail: bool = False) -> None:
    _ledger(ctx, "run")
    if fail:
        raise ValueError("clean_ok was told to fail")


@task(init_timeout_sensitive=True, max_attempts=1)
def init_sensitive(ctx: TaskContext) -> None:
    _ledger(ctx, "run")


@hookimpl
def gta_handlers() -> list[Any]:
    return [in_b, urgent, chain_link, parent, child, overrun, cooperative, stubborn, tick, log_request,
            clean_ok, init_sensitive]


@hookimpl
def gta_periodic() -> list[Any]:
    kind = os.environ.get("GTA_TEST_PERIODIC", "")
    if kind == "tick":
        return [periodic("tick", every=1)]
    if kind == "cron":
        return [periodic("minutely", key="tick", cron="* * * * *")]
    if kind == "bad_key":
        return [periodic("broken", key="no_such_task", every=1)]
    if kind == "bad_args":
        return [periodic("misfit", key="tick", args={"colour": "red"}, every=1)]
    if kind == "clean_succeeded":
        return [periodic("tidy", key="clean_ok", every=1)]
    return []
