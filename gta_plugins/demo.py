"""Demo tasks for `gta demo`: one that succeeds, one that fails twice then succeeds, one that
always fails. Loaded by `gta demo` only (not an entry point: production processes never register
them), in a queue of their own that only the demo's supervisor serves."""
from __future__ import annotations

from typing import Any

from gta_core import TaskContext, hookimpl, task


@task(queue="gta_demo")
def demo_hello(ctx: TaskContext, name: str) -> str:
    ctx.logger.info("hello, %s (task %d)", name, ctx.task_id)
    return name


@task(max_attempts=5, queue="gta_demo")
def demo_flaky(ctx: TaskContext, failures: int = 2) -> None:
    if ctx.attempt <= failures:
        raise RuntimeError(f"simulated failure {ctx.attempt} of {failures}")
    ctx.logger.info("flaky task %d succeeded on attempt %d", ctx.task_id, ctx.attempt)


@task(max_attempts=2, queue="gta_demo")
def demo_broken(ctx: TaskContext) -> None:
    raise ValueError("this task always fails")


@hookimpl
def gta_handlers() -> list[Any]:
    return [demo_hello, demo_flaky, demo_broken]
