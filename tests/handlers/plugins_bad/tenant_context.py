"""A well-behaved context plugin: every submitted task carries the tenant ``acme``."""
from __future__ import annotations

from typing import Any

from gta_core import hookimpl


@hookimpl
def gta_capture_context() -> dict[str, Any]:
    return {"tenant": "acme"}
