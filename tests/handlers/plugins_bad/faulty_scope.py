"""A plugin whose submit scope raises when entered or exited, or tries to swallow the write's
error: the submit goes on, or raises what it raised."""
from __future__ import annotations

from types import TracebackType
from typing import Any

from gta_core import hookimpl


class Exploding:
    def __init__(self, when: str) -> None:
        self.when = when

    def __enter__(self) -> None:
        if self.when == "enter":
            raise RuntimeError("faulty plugin: scope exploded entering")

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> bool:
        if error is None:
            raise RuntimeError("faulty plugin: scope exploded exiting")
        return True  # would swallow the write's error, if GTA let it


@hookimpl
def gta_submit(submission: Any) -> Exploding:
    return Exploding("enter" if submission.tasks[0].key == "record" else "exit")
