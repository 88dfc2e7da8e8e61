"""A hookimpl that matches no hook specification (a misspelled hook name)."""
from __future__ import annotations

from gta_core import hookimpl


@hookimpl
def gta_nonexistent_hook() -> int:
    return 1
