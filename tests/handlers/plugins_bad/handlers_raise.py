"""gta_handlers() itself raises."""
from __future__ import annotations

from typing import Any

from gta_core import hookimpl


@hookimpl
def gta_handlers() -> list[Any]:
    raise LookupError("handlers_raise: cannot list my tasks")
