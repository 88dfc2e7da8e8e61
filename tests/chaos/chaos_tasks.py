"""Handlers of the chaos suite, imported by worker processes as the plugin ``tests.chaos.chaos_tasks``.

Every execution appends to the ledger file named by ``GTA_CHAOS_LEDGER``: a ``start`` line
when the handler begins and an ``end`` line when it returns, raises, or is about to take its
own process down. A line is one ``os.write`` on an ``O_APPEND`` descriptor, so lines from
many processes never interleave, and a file is a channel no database fault can break.
"""
from __future__ import annotations

import ctypes
import os
import resource
import signal
import time
from typing import Any

from gta_core import TaskContext, hookimpl, task

from ..handlers.tasks import append_record

#: how far the memory hog lowers its own address-space limit above what it already uses
MEMORY_HEADROOM = 256 * 1024 * 1024


def ledger(ctx: TaskContext, event: str, tag: str, **extra: Any) -> None:
    """Append one line: task id, attempt, lease owner, pid, the event and its time."""
    path = os.environ.get("GTA_CHAOS_LEDGER")
    if path:
        append_record(path, {"id": ctx.task_id, "attempt": ctx.attempt, "owner": ctx.lease_owner,
                             "pid": os.getpid(), "event": event, "t": time.time(), "tag": tag, **extra})


@task(max_attempts=10)
def chaos_work(ctx: TaskContext, seconds: float = 0.0, tag: str = "", first_seconds: float | None = None,
               fail_first: bool = False) -> None:
    """The stream task: sleeps ``seconds`` (``first_seconds`` on attempt 1, which raises after
    its sleep when ``fail_first``); many attempts so a fault loop rarely exhausts it."""
    ledger(ctx, "start", tag)
    first = ctx.attempt == 1
    time.sleep(first_seconds if first and first_seconds is not None else seconds)
    if first and fail_first:
        ledger(ctx, "end", tag, outcome="error")
        raise RuntimeError("chaos_work fails its first attempt")
    ledger(ctx, "end", tag, outcome="ok")


@task(max_attempts=3)
def chaos_exit(ctx: TaskContext, tag: str = "") -> None:
    """Ends its worker process with ``os._exit`` on every attempt."""
    ledger(ctx, "start", tag)
    ledger(ctx, "end", tag, outcome="exit")
    os._exit(13)


@task(max_attempts=3)
def chaos_segfault(ctx: TaskContext, tag: str = "") -> None:
    """Reads address 0: SIGSEGV kills its worker on every attempt."""
    ledger(ctx, "start", tag)
    ledger(ctx, "end", tag, outcome="segfault")
    ctypes.string_at(0)


@task(max_attempts=2)
def chaos_memory(ctx: TaskContext, kill: bool = False, hold: float = 0.0, survive: float | None = None,
                 tag: str = "") -> None:
    """Exhausts memory under a lowered RLIMIT_AS (never the host's OOM killer).

    The hoard is kept ``hold`` seconds (every thread of the worker is starved meanwhile),
    then freed and the soft limit restored. Then: with ``kill`` the process dies by SIGKILL,
    as by the kernel's OOM killer; with ``survive`` the handler sleeps that long and
    succeeds; otherwise the ``MemoryError`` propagates.
    """
    ledger(ctx, "start", tag)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as handle:
        used = int(handle.read().split()[0]) * resource.getpagesize()
    hoard: list[bytearray] = []
    resource.setrlimit(resource.RLIMIT_AS, (used + MEMORY_HEADROOM, hard))
    error = MemoryError()
    for size in (4 * 1024 * 1024, 64 * 1024, 1024, 64):  # down to the last crumbs: every thread starves
        try:
            while True:
                hoard.append(bytearray(size))
        except MemoryError as exc:
            error = exc
    time.sleep(hold)
    hoard.clear()
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    if survive is not None:
        time.sleep(survive)
        ledger(ctx, "end", tag, outcome="ok")
        return
    ledger(ctx, "end", tag, outcome="oom-kill" if kill else "memory-error")
    if kill:
        os.kill(os.getpid(), signal.SIGKILL)
    raise error


@task(max_attempts=3)
def chaos_spin(ctx: TaskContext, seconds: float, tag: str = "") -> None:
    """Busy pure-Python loop for ``seconds`` (longer than the lease: heartbeats must still run)."""
    ledger(ctx, "start", tag)
    deadline = time.monotonic() + seconds
    total = 0
    while time.monotonic() < deadline:
        for number in range(10_000):
            total += number * number
    ledger(ctx, "end", tag, outcome="ok")


@hookimpl
def gta_handlers() -> list[Any]:
    return [chaos_work, chaos_exit, chaos_segfault, chaos_memory, chaos_spin]
