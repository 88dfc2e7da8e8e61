"""``async def`` handlers for the test suite (plugin ``tests.handlers.async_tasks``), writing the same
ledger as tests/handlers/tasks.py so executions are counted across processes."""
from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from typing import Any

from gta_core import Fail, TaskContext, hookimpl, task
from gta_plugins.request_id import request_id

from .tasks import _ledger

#: set by `asets_context`, which then checks that no other attempt saw its value
handler_state: contextvars.ContextVar[int | None] = contextvars.ContextVar("handler_state", default=None)


@task(max_attempts=3)
async def arecord(ctx: TaskContext, n: int = 0) -> str:
    """Awaits once, then succeeds."""
    await asyncio.sleep(0)
    _ledger(ctx, "run", n=n, request_id=request_id.get(), thread=threading.current_thread().name)
    return f"ran {n}"


@task(max_attempts=3)
async def asleepy(ctx: TaskContext, seconds: float, n: int = 0) -> None:
    """Writes 'start', awaits ``seconds``, writes 'end'."""
    _ledger(ctx, "start", n=n)
    await asyncio.sleep(seconds)
    _ledger(ctx, "end", n=n)


@task(max_attempts=3)
async def asets_context(ctx: TaskContext, n: int) -> None:
    """Records the context variable an earlier attempt may have left behind, then sets it."""
    _ledger(ctx, "run", n=n, found=handler_state.get())
    handler_state.set(n)
    await asyncio.sleep(0)


@task(max_attempts=4)
async def aflaky(ctx: TaskContext, failures: int) -> None:
    """Raises on its first ``failures`` attempts."""
    await asyncio.sleep(0)
    _ledger(ctx, "run")
    if ctx.attempt <= failures:
        raise RuntimeError(f"async flaky failure on attempt {ctx.attempt}")


@task(max_attempts=2)
async def afail(ctx: TaskContext) -> None:
    _ledger(ctx, "run")
    raise Fail("async gave up on purpose")


@task(max_attempts=3)
async def aparent(ctx: TaskContext, count: int) -> None:
    """Submits ``count`` async children, with the parent's request id captured."""
    await asyncio.sleep(0)
    _ledger(ctx, "parent", request_id=request_id.get())
    for n in range(count):
        ctx.submit("arecord", {"n": n})


@task(max_attempts=2, timeout=1)
async def aoverrun(ctx: TaskContext) -> None:
    """Overruns its timeout but honours the cancellation that ends it."""
    _ledger(ctx, "start")
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        _ledger(ctx, "cancelled_error")
        raise
    _ledger(ctx, "end")


@task(max_attempts=1, timeout=1)
async def aignores_cancel(ctx: TaskContext) -> None:
    """Overruns its timeout and swallows every cancellation: only a kill ends it."""
    _ledger(ctx, "start")
    while True:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            _ledger(ctx, "ignored_cancel")


@task(max_attempts=1)
async def ablocks_loop(ctx: TaskContext, seconds: float, spin: bool = False) -> None:
    """Blocks the event loop for ``seconds``: a synchronous sleep in a coroutine, or with
    ``spin`` a pure-Python busy loop (which holds the GIL but for Python's thread switches)."""
    _ledger(ctx, "start")
    if spin:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            pass
    else:
        time.sleep(seconds)
    _ledger(ctx, "end")


@task(max_attempts=1, timeout=1)
async def ablocks_past_timeout(ctx: TaskContext) -> None:
    """Blocks the event loop past its timeout: no cancellation can reach it."""
    _ledger(ctx, "start")
    time.sleep(60)
    _ledger(ctx, "end")


@task(max_attempts=3)
async def acooperative(ctx: TaskContext) -> None:
    """Waits to be cancelled; records that it saw both ``ctx.cancelled`` and the CancelledError."""
    _ledger(ctx, "start")
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        _ledger(ctx, "saw_cancel", flag=ctx.cancelled)
        raise
    _ledger(ctx, "end")


@hookimpl
def gta_handlers() -> list[Any]:
    return [arecord, asleepy, asets_context, aflaky, afail, aparent, aoverrun, aignores_cancel, ablocks_loop,
            ablocks_past_timeout, acooperative]
