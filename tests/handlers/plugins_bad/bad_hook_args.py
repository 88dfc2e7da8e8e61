"""A hookimpl of a real hook that asks for an argument the spec does not pass."""
from __future__ import annotations

from typing import Any

from gta_core import hookimpl


@hookimpl
def gta_retry_delay(task: Any, error: BaseException, bogus: int) -> float:
    return 1.0
