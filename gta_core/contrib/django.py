"""A Django tasks backend: ``@task`` functions enqueue as GTA rows, run under ``gta-supervisor``.

``django.tasks`` on Django 6, the ``django-tasks`` backport before it (Django 5.2 on Python
3.10/3.11)::

    TASKS = {"default": {"BACKEND": "gta_core.contrib.django.GTABackend",
                         "OPTIONS": {"DATABASE": "default", "MAX_ATTEMPTS": 3}}}

``enqueue`` writes the row with the Django connection of ``DATABASE``, inside the caller's
``transaction.atomic()`` (the task exists if and only if the view's writes commit), or in a
transaction of its own outside one, as Django commits any other write there. Each Django task
is stored under the GTA key ``django:<its module path>`` (one handler, the family ``django:*``,
runs them all), so ``gta list --key``, the dashboard and the metrics tell tasks apart. Every
GTA process that submits or runs these tasks names this module as a plugin
(``GTA_PLUGINS=gta_core.contrib.django``); the supervisor's processes also need
``DJANGO_SETTINGS_MODULE``.

`GTABackend.get_result` reads the row through the same Django connection (so it sees a task
enqueued in the open ``atomic()``): pending → READY, running → RUNNING, succeeded →
SUCCESSFUL, failed and cancelled → FAILED. In the worker, each task runs between two calls of
Django's ``close_old_connections()``, as a request does, and sends ``task_started`` and
``task_finished``. Where GTA differs from Django's built-in backends is in docs/integrations.md.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hmac
import importlib
import json
import re
import secrets
import traceback
from typing import Any

import django
from django.apps import apps
from django.conf import settings
from django.core import checks
from django.db import close_old_connections, connections, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

import gta_core

from .. import TaskContext, hookimpl
from .. import task as gta_task
from ..db.transactions import in_transaction
from ..handles.connection import borrowed_database
from ..store.task_store import TaskStore
from ..validation import storable

try:  # Django 6
    from django.tasks import TaskContext as DjangoTaskContext  # type: ignore[import-not-found,unused-ignore]
    from django.tasks import TaskResult, TaskResultStatus  # type: ignore[import-not-found,unused-ignore]
    from django.tasks.backends.base import BaseTaskBackend  # type: ignore[import-not-found,unused-ignore]
    from django.tasks.base import Task, TaskError  # type: ignore[import-not-found,unused-ignore]
    from django.tasks.exceptions import TaskResultDoesNotExist  # type: ignore[import-not-found,unused-ignore]
    from django.tasks.signals import (  # type: ignore[import-not-found,unused-ignore]
        task_enqueued,
        task_finished,
        task_started,
    )
    from django.utils.json import normalize_json  # type: ignore[attr-defined,unused-ignore]
except ImportError:  # the django-tasks backport
    from django_tasks import TaskContext as DjangoTaskContext  # type: ignore[no-redef]
    from django_tasks import TaskResult, TaskResultStatus  # type: ignore[no-redef,unused-ignore]
    from django_tasks.backends.base import BaseTaskBackend  # type: ignore[no-redef,unused-ignore]
    from django_tasks.base import Task, TaskError  # type: ignore[no-redef,unused-ignore]
    from django_tasks.exceptions import TaskResultDoesNotExist  # type: ignore[no-redef,unused-ignore]
    from django_tasks.signals import task_enqueued, task_finished, task_started  # type: ignore[no-redef,unused-ignore]
    from django_tasks.utils import normalize_json  # type: ignore[no-redef,unused-ignore]

#: the key prefix of a Django task's row: ``django:myapp.tasks.send_email``
PREFIX = "django:"
#: the one key of rows enqueued before tasks had keys of their own (their path is in the args),
#: and of a task whose path does not fit a key
KEY = "django.task"
STATUSES = {
    "pending": TaskResultStatus.READY,
    "waiting": TaskResultStatus.READY,  # a group's callback or a chain's step, not released yet
    "running": TaskResultStatus.RUNNING,
    "succeeded": TaskResultStatus.SUCCESSFUL,
    "failed": TaskResultStatus.FAILED,
    "cancelled": TaskResultStatus.FAILED,
}
#: a result id: the GTA task id, a dot, and the row's secret (`gta show 42` for ``42.x3Jb…``)
RESULT_ID = re.compile(r"([1-9][0-9]{0,18})\.([A-Za-z0-9_-]{16})", re.ASCII)
_DIALECTS = {"sqlite": "sqlite", "postgresql": "postgres", "mysql": "mysql"}


class GTABackend(BaseTaskBackend):  # type: ignore[misc]  # Any where Django 6 is missing
    supports_defer = True
    supports_async_task = True  # run in the worker's thread through asgiref, as Task.call does
    supports_get_result = True
    supports_priority = True  # Django's -100..100, higher first, as GTA's priority

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.database = self.options.get("DATABASE", "default")
        self.max_attempts = self.options.get("MAX_ATTEMPTS")

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        self.validate_task(task)
        args, kwargs = normalize_json(args), normalize_json(kwargs)  # TypeError for non-JSON, as Django says
        enqueued_at = dt.datetime.now(dt.timezone.utc)
        token = secrets.token_urlsafe(12)
        key = key_of(task.module_path)
        payload = {"args": args, "kwargs": kwargs, "backend": self.alias, "token": token,
                   "enqueued_at": enqueued_at.isoformat(),
                   "run_after": task.run_after.isoformat() if task.run_after is not None else None}
        if key == KEY:
            payload["path"] = task.module_path
        connection = connections[self.database]
        # outside atomic(): committed at once, as Django's own writes; task_enqueued is sent
        # before the commit either way, so it comes before the worker's task_started
        with transaction.atomic(using=self.database) if connection.get_autocommit() else contextlib.nullcontext():
            task_id = gta_core.submit(connection, key, payload, **self.submit_options(task))
            result = TaskResult(task=task, id=f"{task_id}.{token}", status=TaskResultStatus.READY,
                                enqueued_at=_django_time(enqueued_at), started_at=None, finished_at=None,
                                last_attempted_at=None, args=args, kwargs=kwargs, backend=self.alias, errors=[],
                                worker_ids=[])
            task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult:
        """The task's state read from its row through this backend's Django connection (so
        inside the enqueuing ``atomic()`` too), with the value the function returned once it
        succeeded. `TaskResultDoesNotExist` for an id this backend did not give out."""
        match = RESULT_ID.fullmatch(result_id) if isinstance(result_id, str) else None
        if match is None or int(match.group(1)) >= 2**63:  # refused before any query
            raise TaskResultDoesNotExist(result_id)
        task_id, store = int(match.group(1)), self._store()
        row = store.get(task_id)
        payload = _payload(row) if row is not None else None
        if row is None or payload is None or not hmac.compare_digest(str(payload.get("token")).encode(),
                                                                     match.group(2).encode()):
            raise TaskResultDoesNotExist(result_id)
        return django_result(row, payload, attempt_history(row, store))

    def submit_options(self, task: Task) -> dict[str, Any]:
        """The options of `gta_core.submit` for ``task``: its queue, priority and ``run_after``,
        and ``MAX_ATTEMPTS``. A subclass may add to them (an ``order_key``, say)."""
        return {"queue": task.queue_name, "priority": task.priority, "run_at": _aware(task.run_after),
                "max_attempts": self.max_attempts}

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        if self.database not in settings.DATABASES:
            return [checks.Error(f"the GTA tasks backend {self.alias!r} writes to database {self.database!r} "
                                 "(OPTIONS['DATABASE']), which is not in DATABASES", id="gta.E001")]
        return []

    def _store(self) -> TaskStore:
        """GTA's queries, run on this backend's Django connection in its current transaction."""
        wrapper = connections[self.database]
        wrapper.ensure_connection()
        database = borrowed_database(_DIALECTS.get(wrapper.vendor, wrapper.vendor))
        database._state.set_connection(wrapper.connection)  # type: ignore[attr-defined]  # lent, as submit's handle
        return gta_core.get_runtime().store_for(database)


def key_of(path: str) -> str:
    """The GTA key a Django task is stored under: ``django:<path>``, or `KEY` (the path then goes
    in the args) for a path no key column could hold."""
    key = PREFIX + path
    return key if storable(key) else KEY


def _payload(row: dict[str, Any]) -> dict[str, Any] | None:
    """A Django task's stored args (with its ``path``), or None for a row of another task."""
    if not (row["key"].startswith(PREFIX) or row["key"] == KEY):
        return None
    payload: dict[str, Any] = json.loads(row["args"])
    payload.setdefault("path", row["key"][len(PREFIX):])
    return payload


def django_result(row: dict[str, Any], payload: dict[str, Any], history: History) -> TaskResult:
    """The Django `TaskResult` of a task's row and attempts: the task as it was enqueued
    (priority, queue, ``run_after``, backend alias), its state, history and return value."""
    enqueued_at = payload.get("enqueued_at")
    token = payload.get("token")  # none in a row the previous release stored: its id was the number
    result = TaskResult(task=enqueued_task(row, payload), id=f"{row['id']}.{token}" if token else str(row["id"]),
                        status=STATUSES[row["status"]],
                        enqueued_at=_django_time(dt.datetime.fromisoformat(enqueued_at) if enqueued_at
                                                 else row["created_at"]),
                        started_at=_django_time(history.started_at), finished_at=_django_time(row["finished_at"]),
                        last_attempted_at=_django_time(history.last_attempted_at), args=payload["args"],
                        kwargs=payload["kwargs"], backend=payload["backend"], errors=history.errors,
                        worker_ids=history.worker_ids)
    if row["status"] == "succeeded" and row.get("result") is not None:
        object.__setattr__(result, "_return_value", json.loads(row["result"]))  # Django's own way to set it
    return result


def enqueued_task(row: dict[str, Any], payload: dict[str, Any]) -> Task:
    """The Django task of a row as it was enqueued; `gta_core.Fail` when its path names no task
    (a row must not be able to call an arbitrary function)."""
    task = import_string(payload["path"])
    if not isinstance(task, Task):
        raise gta_core.Fail(f"{payload['path']!r} is not a Django task")
    run_after = payload.get("run_after")
    return task.using(priority=row["priority"], queue_name=row["queue"], backend=payload["backend"],
                      run_after=dt.datetime.fromisoformat(run_after) if run_after else None)


@dataclasses.dataclass(frozen=True)
class History:
    """What Django's `TaskResult` tells of a task's attempts."""

    errors: list[TaskError]  # one per failed attempt, oldest first
    worker_ids: list[str]  # one per attempt started
    started_at: dt.datetime | None  # the first attempt's start
    last_attempted_at: dt.datetime | None  # the latest attempt's start


def attempt_history(row: dict[str, Any], store: TaskStore) -> History:
    """A task's attempts from GTA's attempt log (issue 30's `TaskStore.attempt_entries`, as
    `gta_core.attempts` reads them), on ``store``'s connection: the ones that ran (not an
    operator's action, nor a lease handed back unrun), each failed one's exception class path
    and traceback as recorded when it failed."""
    read_log = getattr(store, "attempt_entries", None)
    if read_log is None:  # until the attempt log is merged: the row's latest attempt only
        return _latest_attempt(row)
    timeline = importlib.import_module("gta_core.attempts").timeline
    logged, current = read_log(row["id"])
    ran = [attempt for attempt in (timeline(row["id"], logged, current) if current is not None else [])
           if not attempt.is_action and attempt.outcome != "released"]
    errors = [TaskError(exception_class_path=attempt.exception_class_path,
                        traceback=attempt.traceback or attempt.error or "")
              for attempt in ran if attempt.exception_class_path]
    return History(errors, [attempt.worker or "gta" for attempt in ran], ran[0].started_at if ran else None,
                   ran[-1].started_at if ran else None)


def _latest_attempt(row: dict[str, Any]) -> History:
    """The row's latest error (its class guessed from the traceback's last line), worker and start."""
    errors = []
    if row["last_error"]:
        summary, _, text = row["last_error"].partition("\n\n")
        name = (text or summary).strip().splitlines()[-1].split(":", 1)[0].strip()
        errors.append(TaskError(exception_class_path=name if "." in name else f"builtins.{name}",
                                traceback=text or summary))
    return History(errors, [row["lease_owner"] or "gta"] * row["attempts"], row["started_at"], row["started_at"])


def _aware(moment: dt.datetime | None) -> dt.datetime | None:
    """A ``run_after`` as GTA's ``run_at``: naive ones (``USE_TZ = False``) are in Django's time zone."""
    if moment is None or timezone.is_aware(moment):
        return moment
    aware: dt.datetime = timezone.make_aware(moment)
    return aware


def _django_time(moment: dt.datetime | None) -> dt.datetime | None:
    """An aware UTC time as Django's ``timezone.now()`` gives it: naive local without ``USE_TZ``."""
    if moment is None or settings.USE_TZ:
        return moment
    naive: dt.datetime = timezone.make_naive(moment)
    return naive


@gta_task(key=PREFIX + "*")
def run_task(ctx: TaskContext, args: list[Any], kwargs: dict[str, Any], backend: str, token: str,
             enqueued_at: str, run_after: str | None = None) -> Any:
    """Run the Django task ``django:<path>`` in a GTA worker; what it returns is stored as the
    GTA task's result, Django's ``return_value``. (The parameters are the stored shape, which
    submit checks; `_run` reads them with the row, whose state the `TaskResult` needs too.)"""
    return _run(ctx)


@gta_task(key=KEY)
def run(ctx: TaskContext, path: str, args: list[Any], kwargs: dict[str, Any], backend: str, token: str = "",
        enqueued_at: str | None = None, run_after: str | None = None) -> Any:
    """Run a Django task stored under `KEY` (its path in the args)."""
    return _run(ctx)


def _run(ctx: TaskContext) -> Any:
    """One attempt of a Django task, between two ``close_old_connections()`` (a connection the
    server ended, or older than ``CONN_MAX_AGE``, is replaced as in Django's request cycle),
    announced by ``task_started`` and ``task_finished``."""
    if not apps.ready:
        django.setup()
    close_old_connections()
    try:
        store = gta_core.get_runtime().store
        # a connection the server ended is replaced and the reads tried once more
        row, history = in_transaction(store.db, lambda: _read(store, ctx.task_id))
        payload = _payload(row)
        assert payload is not None  # its key is one of this module's
        result = django_result(row, payload, history)
        sender = type(result.task.get_backend())
        task_started.send(sender=sender, task_result=result)
        try:
            if result.task.takes_context:
                value = result.task.call(DjangoTaskContext(task_result=result), *result.args, **result.kwargs)
            else:
                value = result.task.call(*result.args, **result.kwargs)
            value = normalize_json(value)  # TypeError for a value that is not JSON, as Django says
        except BaseException as exc:
            last = ctx.attempt >= ctx.max_attempts or isinstance(exc, gta_core.Fail)
            task_finished.send(sender=sender, task_result=_finished(
                result, TaskResultStatus.FAILED if last else TaskResultStatus.READY, error=exc))
            raise
        finished = _finished(result, TaskResultStatus.SUCCESSFUL)
        object.__setattr__(finished, "_return_value", value)
        task_finished.send(sender=sender, task_result=finished)
        return value
    finally:
        close_old_connections()


def _read(store: TaskStore, task_id: int) -> tuple[dict[str, Any], History]:
    """A leased task's row and attempts (it exists: this worker holds its lease)."""
    row = store.get(task_id)
    assert row is not None
    return row, attempt_history(row, store)


def _finished(result: TaskResult, status: TaskResultStatus, error: BaseException | None = None) -> TaskResult:
    """``result`` once its attempt ended: the state ``task_finished`` announces (READY for a
    failed attempt GTA will retry)."""
    errors = list(result.errors)
    if error is not None:
        errors.append(TaskError(exception_class_path=exception_path(error),
                                traceback="".join(traceback.format_exception(error))))
    final = status in (TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED)
    return TaskResult(task=result.task, id=result.id, status=status, enqueued_at=result.enqueued_at,
                      started_at=result.started_at,
                      finished_at=_django_time(dt.datetime.now(dt.timezone.utc)) if final else None,
                      last_attempted_at=result.last_attempted_at, args=result.args, kwargs=result.kwargs,
                      backend=result.backend, errors=errors, worker_ids=result.worker_ids)


def exception_path(error: BaseException) -> str:
    """Django's ``exception_class_path``: the dotted path of the exception's class."""
    cls = type(error)
    return f"{cls.__module__}.{cls.__qualname__}"


@hookimpl
def gta_handlers() -> list[Any]:
    return [run_task, run]


__all__ = ["KEY", "PREFIX", "GTABackend", "key_of"]
