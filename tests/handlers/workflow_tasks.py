"""Handlers for tests/process/test_workflows.py, imported by worker processes as the plugin
``tests.handlers.workflow_tasks``. Each writes the ledger (tests/handlers/tasks.py), so runs are counted across
processes."""
from __future__ import annotations

import os
import signal
import time
from typing import Any

from gta_core import Fail, TaskContext, TaskRequest, hookimpl, task

from .tasks import _ledger


@task(max_attempts=3)
def square(ctx: TaskContext, n: int, pause: float = 0.0) -> int:
    _ledger(ctx, "run", n=n)
    time.sleep(pause)
    return n * n


@task(max_attempts=1)
def echo(ctx: TaskContext, value: Any = None) -> Any:
    """Returns its argument (a result too large or not JSON comes from the test)."""
    _ledger(ctx, "run")
    return value


@task(max_attempts=1)
def unserializable(ctx: TaskContext) -> Any:
    _ledger(ctx, "run")
    return {1, 2}


@task(max_attempts=1)
def refuse(ctx: TaskContext, n: int = 0, previous: Any = None) -> None:
    _ledger(ctx, "run", n=n)
    raise Fail(f"member {n} refuses")


@task(max_attempts=1)
def collect(ctx: TaskContext, group: list[dict[str, Any]], label: str = "") -> int:
    """A group's callback: records what it received."""
    _ledger(ctx, "callback", label=label, group=group)
    return len(group)


@task(max_attempts=3)
def add(ctx: TaskContext, previous: Any = None, amount: int = 1) -> int:
    """A chain step: the previous step's result plus ``amount``."""
    _ledger(ctx, "run", previous=previous)
    return (previous or 0) + amount


@task(max_attempts=3)
def fan_out(ctx: TaskContext, count: int) -> None:
    """A handler that creates a group with its success."""
    _ledger(ctx, "run")
    ctx.group([TaskRequest("square", {"n": n}) for n in range(count)],
              on_complete=TaskRequest("collect", {"label": "from handler"}))


@task(max_attempts=3)
def start_chain(ctx: TaskContext) -> None:
    """A handler that creates a chain with its success."""
    _ledger(ctx, "run")
    ctx.chain([TaskRequest("add", {"amount": 2}), TaskRequest("add", {"amount": 3})])


@task(max_attempts=3)
def die_once(ctx: TaskContext, flag: str, n: int = 0) -> int:
    """SIGKILLs its own worker process on the first attempt (while ``flag`` does not exist)."""
    _ledger(ctx, "run", n=n)
    if not os.path.exists(flag):
        with open(flag, "w"):
            pass
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(5)
    return n


@task(max_attempts=1)
def die(ctx: TaskContext) -> None:
    """SIGKILLs its own worker process: with one attempt, the janitor fails it for good."""
    _ledger(ctx, "run")
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(5)


@task(max_attempts=1)
def freeze(ctx: TaskContext) -> None:
    """Sleeps while the test SIGSTOPs its worker: its lease expires, and rescue fails it (one attempt)."""
    _ledger(ctx, "run")
    time.sleep(3)


@hookimpl
def gta_handlers() -> list[Any]:
    return [square, echo, unserializable, refuse, collect, add, fan_out, start_chain, die_once, die, freeze]
