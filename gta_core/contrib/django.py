"""A Django tasks backend: ``@task`` functions enqueue as GTA rows, run under ``gta-supervisor``.

``django.tasks`` on Django 6, the ``django-tasks`` backport before it (Django 5.2 on Python
3.10/3.11)::

    TASKS = {"default": {"BACKEND": "gta_core.contrib.django.GTABackend",
                         "OPTIONS": {"DATABASE": "default", "MAX_ATTEMPTS": 3}}}

``enqueue`` writes the row with the Django connection of ``DATABASE``, inside the caller's
``transaction.atomic()`` (the task exists if and only if the view's writes commit), or in a
transaction of its own outside one, as Django commits any other write there. Every GTA
process that submits or runs these tasks names this module as a plugin
(``GTA_PLUGINS=gta_core.contrib.django``); the supervisor's processes also need
``DJANGO_SETTINGS_MODULE``. `GTABackend.get_result` reads the row: pending → READY,
running → RUNNING, succeeded → SUCCESSFUL, failed and cancelled → FAILED. What GTA adds to
Django's contract: at-least-once execution with retries (``MAX_ATTEMPTS``, GTA's default
when unset), leases rescued from dead workers, timeouts, delays and priorities.
"""
from __future__ import annotations

import json
from typing import Any

import django
from django.apps import apps
from django.db import connections, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

import gta_core
from gta_core import TaskContext, hookimpl
from gta_core import task as gta_task

try:  # Django 6
    from django.tasks import TaskContext as DjangoTaskContext  # type: ignore[import-not-found,unused-ignore]
    from django.tasks import TaskResult, TaskResultStatus  # type: ignore[import-not-found,unused-ignore]
    from django.tasks.backends.base import BaseTaskBackend  # type: ignore[import-not-found,unused-ignore]
    from django.tasks.base import Task, TaskError  # type: ignore[import-not-found,unused-ignore]
    from django.tasks.exceptions import TaskResultDoesNotExist  # type: ignore[import-not-found,unused-ignore]
    from django.tasks.signals import task_enqueued  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # the django-tasks backport
    from django_tasks import TaskContext as DjangoTaskContext  # type: ignore[no-redef]
    from django_tasks import TaskResult, TaskResultStatus  # type: ignore[no-redef,unused-ignore]
    from django_tasks.backends.base import BaseTaskBackend  # type: ignore[no-redef,unused-ignore]
    from django_tasks.base import Task, TaskError  # type: ignore[no-redef,unused-ignore]
    from django_tasks.exceptions import TaskResultDoesNotExist  # type: ignore[no-redef,unused-ignore]
    from django_tasks.signals import task_enqueued  # type: ignore[no-redef,unused-ignore]

#: the one GTA task that runs every Django task (its args name the function)
KEY = "django.task"
STATUSES = {
    "pending": TaskResultStatus.READY,
    "waiting": TaskResultStatus.READY,  # a group's callback or a chain's step, not released yet
    "running": TaskResultStatus.RUNNING,
    "succeeded": TaskResultStatus.SUCCESSFUL,
    "failed": TaskResultStatus.FAILED,
    "cancelled": TaskResultStatus.FAILED,
}


class GTABackend(BaseTaskBackend):  # type: ignore[misc]  # Any where Django 6 is missing
    supports_defer = True
    supports_get_result = True
    supports_priority = True  # Django's -100..100, higher first, as GTA's priority

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.database = self.options.get("DATABASE", "default")
        self.max_attempts = self.options.get("MAX_ATTEMPTS")

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        self.validate_task(task)
        payload = {"path": task.module_path, "args": list(args), "kwargs": dict(kwargs), "backend": self.alias}
        connection = connections[self.database]
        options = {"queue": task.queue_name, "priority": task.priority, "run_at": task.run_after,
                   "max_attempts": self.max_attempts}
        if connection.get_autocommit():  # outside atomic(): committed at once, as Django's own writes
            with transaction.atomic(using=self.database):
                task_id = gta_core.submit(connection, KEY, payload, **options)
        else:
            task_id = gta_core.submit(connection, KEY, payload, **options)
        result = TaskResult(task=task, id=str(task_id), status=TaskResultStatus.READY, enqueued_at=timezone.now(),
                            started_at=None, finished_at=None, last_attempted_at=None, args=payload["args"],
                            kwargs=payload["kwargs"], backend=self.alias, errors=[], worker_ids=[])
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult:
        """The task's state read from its row, with the value the function returned once it
        succeeded (stored as JSON: a value that is not JSON fails the task)."""
        row = gta_core.get_runtime().store.get(int(result_id)) if str(result_id).isdigit() else None
        if row is None or row["key"] != KEY:
            raise TaskResultDoesNotExist(result_id)
        return _result(row, self.alias)


def _result(row: dict[str, Any], alias: str) -> TaskResult:
    payload = json.loads(row["args"])
    errors = []
    if row["last_error"]:
        errors.append(TaskError(exception_class_path=_exception_path(row["last_error"]), traceback=row["last_error"]))
    result = TaskResult(task=import_string(payload["path"]), id=str(row["id"]), status=STATUSES[row["status"]],
                      enqueued_at=row["created_at"], started_at=row["started_at"], finished_at=row["finished_at"],
                      last_attempted_at=row["started_at"], args=payload["args"], kwargs=payload["kwargs"],
                      backend=alias, errors=errors,
                      worker_ids=[row["lease_owner"] or "gta"] * row["attempts"])  # Django counts attempts so
    if row["status"] == "succeeded" and row.get("result") is not None:
        object.__setattr__(result, "_return_value", json.loads(row["result"]))  # Django's own way to set it
    return result


def _exception_path(error: str) -> str:
    """The exception's dotted path, from the last line of the traceback GTA stored."""
    name = error.strip().splitlines()[-1].split(":", 1)[0].strip()
    return name if "." in name else f"builtins.{name}"


@gta_task(key=KEY)
def run(ctx: TaskContext, path: str, args: list[Any], kwargs: dict[str, Any], backend: str) -> Any:
    """Run one Django task in a GTA worker (Django is set up on first use); what it returns is
    stored as the GTA task's result, Django's ``return_value``."""
    if not apps.ready:
        django.setup()
    task = import_string(path)
    if task.takes_context:
        row = gta_core.get_runtime().store.get(ctx.task_id)
        assert row is not None  # leased by this worker: it exists
        return task.call(DjangoTaskContext(task_result=_result(row, backend)), *args, **kwargs)
    return task.call(*args, **kwargs)


@hookimpl
def gta_handlers() -> list[Any]:
    return [run]


__all__ = ["GTABackend", "KEY"]
