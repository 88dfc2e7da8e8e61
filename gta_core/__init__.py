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
