"""One exception root for everything GTA raises, and the task control flow.

Each class's docstring is its default message, so ``raise UnknownTask()`` still says
something useful; callers add the specifics.
"""
from __future__ import annotations


class GTAError(Exception):
    """A GTA error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(GTAError):
    """A setting has an invalid value."""

    def __init__(self, setting: str, rule: str) -> None:
        self.setting = setting
        self.rule = rule
        super().__init__(f"invalid setting {setting}: {rule}")


class DriverMissing(GTAError):
    """The database driver this URL needs is not installed."""


class PluginError(GTAError):
    """A plugin could not be loaded or is inconsistent."""


class SubmitError(GTAError):
    """A task could not be submitted; nothing was written."""


class UnknownTask(SubmitError):
    """No handler is registered under this task key."""


class InvalidArguments(SubmitError):
    """The task arguments are not valid for this task."""


class DatabaseError(GTAError):
    """The task database could not be used."""


class DatabaseUnavailable(DatabaseError):
    """The task database cannot be reached."""


class SchemaError(DatabaseError):
    """The task table is missing or older than this version of GTA: run `gta migrate`."""


class DatabaseLocked(DatabaseError):
    """SQLite would not let this write take its write lock ("database is locked"); nothing was written."""


class InvalidQueue(GTAError):
    """A queue name is empty or cannot be stored."""


class InvalidLimit(GTAError, ValueError):
    """A concurrency or rate limit has an invalid value."""


class TaskNotFound(GTAError):
    """No task has this id."""


class TaskControl(GTAError):
    """Raised by a handler to steer what happens to its task next."""


class Retry(TaskControl):
    """Run this task again after ``delay`` seconds (an attempt is still counted)."""

    def __init__(self, delay: float = 0.0, reason: str | None = None) -> None:
        if delay < 0:
            raise ValueError("Retry delay must be >= 0")
        self.delay = float(delay)
        super().__init__(reason or f"retry requested in {self.delay:g}s")


class Fail(TaskControl):
    """Fail this task now, with no further attempts."""

    def __init__(self, reason: str = "failed by handler") -> None:
        self.reason = reason
        super().__init__(reason)


class WorkerDied(GTAError):
    """The worker process running this task died."""


class TaskTimeout(GTAError):
    """The task ran past its timeout: its worker process was killed, or (an async handler) its
    coroutine was cancelled."""


class LeaseExpired(GTAError):
    """The task's lease expired before its worker finished it.

    Never raised: rescue hands it to the retry policy (`gta_retry_delay`) as the error of the
    attempt it takes back (`gta_core.outcomes`).
    """
