"""gta_handlers() returns something that is not a @task definition."""
from __future__ import annotations

from typing import Any

from gta_core import hookimpl


def plain_function(ctx: Any) -> None:
    pass


@hookimpl
def gta_handlers() -> list[Any]:
    return [plain_function]
