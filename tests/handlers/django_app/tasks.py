"""Django tasks for the GTA backend's tests; each run, and each ``task_started`` /
``task_finished`` signal a worker sends, appends to the test ledger."""
from __future__ import annotations

import os
import time
from typing import Any

from django.db import connection

from tests.handlers.tasks import append_record

from .api import task, task_finished, task_started


def _ledger(**record: Any) -> None:
    append_record(os.environ["GTA_TEST_LEDGER"], {"pid": os.getpid(), **record})


def _on_signal(signal: str) -> Any:
    def receive(sender: Any, task_result: Any, **kwargs: Any) -> None:
        _ledger(phase="django-signal", signal=signal, id=task_result.id, status=str(task_result.status),
                path=task_result.task.module_path, attempts=task_result.attempts,
                errors=[error.exception_class_path for error in task_result.errors])
    return receive


# connected where the module is imported: in a worker, before its first task of this module runs
on_started, on_finished = _on_signal("started"), _on_signal("finished")
task_started.connect(on_started)
task_finished.connect(on_finished)


@task()
def remember(n: int) -> int:
    _ledger(phase="django", n=n)
    return n


@task()
async def remember_async(n: int) -> int:
    _ledger(phase="django-async", n=n)
    return n


@task(takes_context=True)
def remember_attempt(context: Any, n: int) -> None:
    _ledger(phase="django-context", n=n, attempt=context.attempt, id=context.task_result.id)


class Broken(Exception):
    """What the failing tasks raise."""


@task()
def breaks() -> None:
    _ledger(phase="django-breaks")
    raise Broken("on purpose")


@task(takes_context=True)
def fails_differently(context: Any) -> None:
    """Attempt 1: a two-line message with a note; attempt 2: an exception group."""
    if context.attempt == 1:
        error = Broken("line one\nline two")
        error.add_note("a note")
        raise error
    raise ExceptionGroup("several", [ValueError("inner")])  # noqa: F821  # builtin from Python 3.11


@task()
def returns_no_json() -> object:
    return object()


@task()
def queries() -> int:
    """One query on Django's connection, as any ORM task makes."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        (value,) = cursor.fetchone()
    _ledger(phase="django-query")
    return int(value)


@task()
def pause(seconds: float) -> None:
    time.sleep(seconds)
