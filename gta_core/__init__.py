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
"""
from __future__ import annotations

from . import drivers  # noqa: F401 - first: a supervisor's children let peewee load one driver only
from .asubmit import asubmit, asubmit_many
from .config import Settings, load_settings
from .errors import (
    ConfigError,
    DatabaseError,
    DatabaseUnavailable,
    DriverMissing,
    Fail,
    GTAError,
    InvalidArguments,
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
from .queues import QueueChange, QueueState, pause_queue, queues, resume_queue
from .runtime import configure, get_runtime
from .schedules import Periodic, periodic
from .status import TaskState, status
from .submit import OWN_TRANSACTION, cancel, submit, submit_many, transaction
from .tasks import TaskContext, TaskDefinition, TaskRecord, task
from .validation import TaskRequest

__all__ = [
    "OWN_TRANSACTION", "ConfigError", "DatabaseError", "DatabaseUnavailable", "DriverMissing", "Fail",
    "GTAError", "InvalidArguments", "InvalidQueue", "Periodic", "PluginError", "QueueChange", "QueueState",
    "Retry", "SchemaError", "Settings", "SubmitError", "TaskContext", "TaskDefinition", "TaskNotFound",
    "TaskRecord", "TaskRequest", "TaskState", "TaskTimeout", "UnknownTask", "WorkerDied", "asubmit",
    "asubmit_many", "cancel", "configure", "get_runtime", "hookimpl", "load_settings", "pause_queue",
    "periodic", "queues", "resume_queue", "status", "submit", "submit_many", "task", "transaction",
]
