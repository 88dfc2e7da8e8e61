"""Handlers for the test suite, imported by worker processes as the plugin ``tests.handlers.tasks``.

Every execution appends one line to the ledger file named by ``GTA_TEST_LEDGER`` (O_APPEND
writes of one short line are atomic), so tests can count executions across processes
without touching the database under test.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

from gta_core import Fail, Retry, TaskContext, hookimpl, task


def append_record(path: str, record: dict[str, Any]) -> None:
    """Append ``record`` as one JSON line in a single ``O_APPEND`` write (never interleaved)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


def _ledger(ctx: TaskContext, phase: str, **extra: Any) -> None:
    path = os.environ.get("GTA_TEST_LEDGER")
    if path:
        append_record(path, {"id": ctx.task_id, "attempt": ctx.attempt, "pid": os.getpid(), "phase": phase,
                             "t": time.time(), "queue": ctx.queue, **extra})


@task(max_attempts=3)
def record(ctx: TaskContext, n: int = 0) -> None:
    """Succeeds at once."""
    _ledger(ctx, "run", n=n)


@task(max_attempts=3)
def sleepy(ctx: TaskContext, seconds: float, n: int = 0) -> None:
    """Writes 'start', sleeps, writes 'end'."""
    _ledger(ctx, "start", n=n)
    time.sleep(seconds)
    _ledger(ctx, "end", n=n)


@task(max_attempts=4)
def flaky(ctx: TaskContext, failures: int) -> None:
    """Raises on its first ``failures`` attempts."""
    _ledger(ctx, "run")
    if ctx.attempt <= failures:
        raise RuntimeError(f"flaky failure on attempt {ctx.attempt}")


@task(max_attempts=3)
def always_fails(ctx: TaskContext) -> None:
    _ledger(ctx, "run")
    raise ValueError("always fails")


@task(max_attempts=5)
def fails_for_good(ctx: TaskContext) -> None:
    _ledger(ctx, "run")
    raise Fail("gave up on purpose")


@task(max_attempts=1)
def fails_while_flag(ctx: TaskContext, flag: str, message: str = "the flag file is there") -> None:
    """Fails for good (with ``message``) while the file ``flag`` exists, succeeds once it is gone."""
    _ledger(ctx, "run")
    if os.path.exists(flag):
        raise Fail(message)


@task(max_attempts=3)
def retry_later(ctx: TaskContext, delay: float) -> None:
    """Asks for a retry ``delay`` seconds later on its first attempt, then succeeds."""
    _ledger(ctx, "run")
    if ctx.attempt == 1:
        raise Retry(delay=delay)


@task(max_attempts=2)
def crash(ctx: TaskContext) -> None:
    """Kills its own worker process."""
    _ledger(ctx, "run")
    os._exit(17)


@task
def greet(ctx: TaskContext, name: str, punctuation: str = "!") -> str:
    return f"hello {name}{punctuation}"


@task(max_attempts=2)
def breaks_its_thread(ctx: TaskContext) -> None:
    """Never runs: the hook below kills the handler thread that is about to start it."""
    _ledger(ctx, "run")


@hookimpl
def gta_task_event(event: str, task: Any, error: BaseException | None, duration: float | None) -> None:
    """A plugin fault that escapes the guarded hook call (SystemExit is not an Exception)."""
    if event == "started" and task.key == "breaks_its_thread":
        raise SystemExit("a plugin raised SystemExit in a worker thread")


@hookimpl
def gta_handlers() -> list[Any]:
    return [record, sleepy, flaky, always_fails, fails_for_good, fails_while_flag, retry_later, crash, greet,
            breaks_its_thread]
