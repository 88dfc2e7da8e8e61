"""GTA: reliable tasks and transactional messages for applications on a relational database.

Public API::

    from gta_core import hookimpl, task, submit

    @task(max_attempts=5)
    def send_email(ctx, to: str) -> None: ...

    with db.atomic() as tx:
        submit(tx, "send_email", {"to": "a@example.com"})   # exists iff tx commits

    async with session.begin():                            # SQLAlchemy AsyncSession, asyncpg, psycopg async
        await asubmit(session, "send_email", {"to": "a@example.com"})

    pause_queue("mail", reason="SMTP down")   # cluster-wide; resume_queue("mail"), queues()
    limit_queue("mail", concurrency=5, rate_limit="100/m")   # global; @task(concurrency=3, rate_limit=...)
    wait(task_id, timeout=30)                 # TaskResult(status, value): what the handler returned
    attempts(task_id)                         # [Attempt(number, outcome, worker, error, ...)]: its history
    group(tx, [("resize", {"n": 1}), ...], on_complete=TaskRequest("collect"))   # docs/workflows.md
"""
from __future__ import annotations

#: this release; packaging reads it from here (pyproject.toml), `gta --version` prints it
__version__ = "0.1.0"

from .db import drivers  # noqa: F401 - first: a supervisor's children let peewee load one driver only

# isort: split
import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .asubmit import asubmit, asubmit_many
    from .attempts import Attempt, attempts
    from .config import Settings, load_settings
    from .errors import (
        ConfigError,
        DatabaseError,
        DatabaseLocked,
        DatabaseUnavailable,
        DriverMissing,
        Fail,
        GTAError,
        InvalidArguments,
        InvalidLimit,
        InvalidQueue,
        PluginError,
        Retry,
        SchemaError,
        SubmitError,
        TaskNotFound,
        TaskTimeout,
        UnknownTask,
        WorkerDied,
    )
    from .hookspecs import hookimpl
    from .limits import LimitState, limit_queue, limits, unlimit_queue
    from .queues import QueueChange, QueueState, pause_queue, queues, resume_queue
    from .results import TaskResult, result, wait
    from .runtime import configure, get_runtime
    from .schedules import Periodic, periodic
    from .status import TaskState, status
    from .submit import OWN_TRANSACTION, CancelResult, cancel, submit, submit_many, transaction
    from .tasks import TaskContext, TaskDefinition, TaskRecord, task
    from .validation import TaskRequest
    from .workflows import Workflow, chain, group

#: where each public name lives: imported on first use (PEP 562), so that ``import gta_core``
#: costs a few milliseconds and a command that learns its database first (``gta-supervisor``)
#: lets peewee import that database's driver alone (`gta_core.db.drivers`)
_HOMES: dict[str, tuple[str, ...]] = {
    "asubmit": ("asubmit", "asubmit_many"),
    "attempts": ("Attempt", "attempts"),
    "config": ("Settings", "load_settings"),
    "errors": ("ConfigError", "DatabaseError", "DatabaseLocked", "DatabaseUnavailable", "DriverMissing", "Fail",
               "GTAError", "InvalidArguments", "InvalidLimit", "InvalidQueue", "PluginError", "Retry", "SchemaError",
               "SubmitError", "TaskNotFound", "TaskTimeout", "UnknownTask", "WorkerDied"),
    "hookspecs": ("hookimpl",),
    "limits": ("LimitState", "limit_queue", "limits", "unlimit_queue"),
    "queues": ("QueueChange", "QueueState", "pause_queue", "queues", "resume_queue"),
    "results": ("TaskResult", "result", "wait"),
    "runtime": ("configure", "get_runtime"),
    "schedules": ("Periodic", "periodic"),
    "status": ("TaskState", "status"),
    "submit": ("OWN_TRANSACTION", "CancelResult", "cancel", "submit", "submit_many", "transaction"),
    "tasks": ("TaskContext", "TaskDefinition", "TaskRecord", "task"),
    "validation": ("TaskRequest",),
    "workflows": ("Workflow", "chain", "group"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}




def __getattr__(name: str) -> Any:
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'gta_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOME_OF])


class _Package(types.ModuleType):
    """``gta_core`` itself: ``gta_core.submit`` is the function, whichever imports came first.

    Importing a submodule binds it on its package (``gta_core.submit`` = the module), and
    six public functions share their module's name (submit, asubmit, attempts, limits,
    queues, status). An eager ``from .submit import submit`` rebinds the name after that; a
    lazy one cannot, so the package keeps a public name's object once it has it."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in _HOME_OF:
            current = self.__dict__.get(name)
            if current is not None and not isinstance(current, types.ModuleType):
                return
            self.__dict__.pop(name, None)  # not the module: `__getattr__` finds the function
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "__version__",
    "OWN_TRANSACTION", "Attempt", "CancelResult", "ConfigError", "DatabaseError", "DatabaseLocked",
    "DatabaseUnavailable", "DriverMissing", "Fail", "GTAError", "InvalidArguments", "InvalidLimit", "InvalidQueue",
    "LimitState", "Periodic", "PluginError", "QueueChange", "QueueState", "Retry", "SchemaError", "Settings",
    "SubmitError", "TaskContext", "TaskDefinition",
    "TaskNotFound", "TaskRecord", "TaskRequest", "TaskResult", "TaskState", "TaskTimeout", "UnknownTask",
    "WorkerDied", "Workflow", "asubmit", "asubmit_many", "attempts", "cancel", "chain", "configure", "get_runtime",
    "group", "hookimpl", "limit_queue", "limits", "load_settings", "pause_queue", "periodic", "queues", "result",
    "resume_queue", "status", "submit", "submit_many", "task", "transaction", "unlimit_queue", "wait",
]
