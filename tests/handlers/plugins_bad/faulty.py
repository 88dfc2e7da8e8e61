"""A plugin whose hooks raise: the engine must log and count, never crash."""
from __future__ import annotations

from typing import Any

from gta_core import hookimpl


@hookimpl
def gta_capture_context() -> dict[str, Any]:
    raise RuntimeError("faulty plugin: capture_context exploded")


@hookimpl(tryfirst=True)
def gta_retry_delay(task: Any, error: BaseException) -> float:
    raise RuntimeError("faulty plugin: retry_delay exploded")


@hookimpl
def gta_task_events(event: str, tasks: list[Any], errors: list[BaseException | None],
                    durations: list[float | None]) -> None:
    raise RuntimeError("faulty plugin: task_events exploded")
