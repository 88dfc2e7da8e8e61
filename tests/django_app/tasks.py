"""Django tasks for the GTA backend's tests; each run appends to the test ledger."""
from __future__ import annotations

import os
from typing import Any

from django_tasks import task

from tests.tasks import append_record


def _ledger(**record: Any) -> None:
    append_record(os.environ["GTA_TEST_LEDGER"], {"pid": os.getpid(), **record})


@task()
def remember(n: int) -> int:
    _ledger(phase="django", n=n)
    return n


@task(takes_context=True)
def remember_attempt(context: Any, n: int) -> None:
    _ledger(phase="django-context", n=n, attempt=context.attempt, id=context.task_result.id)


class Broken(Exception):
    """What the failing task raises."""


@task()
def breaks() -> None:
    _ledger(phase="django-breaks")
    raise Broken("on purpose")
