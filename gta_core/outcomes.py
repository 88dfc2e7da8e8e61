"""The outcome rule: what becomes of a task's attempt, decided in one place.

Whoever learns how an attempt ended — a worker's handler thread, the supervisor's janitor for a
worker that died or was killed for a timeout, lease rescue for a lease nobody renewed, eager mode
in an application's tests — asks `decide` for the one write to make and makes it (fenced on the
lease, so a write that lost its lease changes nothing):

=============================  ========================================================
what happened                  the write
=============================  ========================================================
returned                       succeed
raised `Fail`                  fail with that error
raised `UnknownTask` /         fail (retrying cannot help)
`InvalidArguments`
raised `Retry(delay)`          retry after ``delay``; fail once ``max_attempts`` are used
raised anything else           retry after the policy's delay (`gta_retry_delay`), or fail
timed out (`TaskTimeout`)      when the policy says None
worker died (`WorkerDied`)
lease expired, rescued
(`LeaseExpired`)
lease lost                     nothing: the task is someone else's now
=============================  ========================================================

A rescued attempt goes through the retry policy like any other failure: it gets the policy's
backoff, and fails when the policy gives up. (Before this rule, rescue put the task back at
once and failed it only at ``max_attempts``, so a task whose worker kept dying was re-run with
no pause and a custom policy was never asked.)
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import traceback

from .errors import Fail, InvalidArguments, LeaseExpired, Retry, TaskTimeout, UnknownTask, WorkerDied
from .plugins import Plugins, first_hook_result
from .store.attempts import RESCUED, TIMED_OUT, WORKER_DIED, LogEntry, class_path
from .tasks import TaskRecord


class Action(enum.Enum):
    """The write an outcome asks for."""

    SUCCEED = "succeeded"
    RETRY = "retried"
    FAIL = "failed"
    NOTHING = "lost"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The one write to make for an attempt: ``delay`` (seconds) for a retry, ``error`` for a
    retry or a failure."""

    action: Action
    delay: float | None = None
    error: BaseException | None = None

    @property
    def event(self) -> str:
        """The lifecycle event (`gta_task_event`) this outcome reports once written."""
        return self.action.value

    @property
    def error_text(self) -> str:
        """What goes into ``last_error``: ``Type: message``, then the traceback."""
        if self.error is None:
            return ""
        return f"{one_line(self.error)}\n\n{self.traceback_text}"

    @functools.cached_property
    def traceback_text(self) -> str:
        """The error's formatted traceback (ending with its ``Type: message`` line), formatted once."""
        error = self.error
        return "".join(traceback.format_exception(type(error), error, error.__traceback__)) if error else ""

    def entry(self) -> LogEntry:
        """The attempt log's entry of a retry or a failure: how the attempt ended (timed out, its
        worker died, its lease expired, else by the write: retried or failed), its error's real
        class, message and traceback, and the delay before the next attempt, if any."""
        error = self.error
        assert error is not None
        ended = next((name for kind, name in _ENDINGS if isinstance(error, kind)), self.action.value)
        return LogEntry(ended, class_path(type(error)), str(error), self.traceback_text, self.delay)


SUCCEED = Outcome(Action.SUCCEED)
NOTHING = Outcome(Action.NOTHING)

#: errors no retry can cure: the task fails at once
_HOPELESS = (Fail, UnknownTask, InvalidArguments)
#: how the attempt log names an attempt's end by the error it ended with (otherwise retried or failed)
_ENDINGS = ((TaskTimeout, TIMED_OUT), (WorkerDied, WORKER_DIED), (LeaseExpired, RESCUED))


def decide(plugins: Plugins, task: TaskRecord, error: BaseException | None, *, lease_lost: bool = False) -> Outcome:
    """The write to make for ``task``'s attempt (``task.attempts`` counts it) that ended with
    ``error`` (None: the handler returned). ``lease_lost``: the lease was taken over, so the
    attempt is no longer ours to settle."""
    if lease_lost:
        return NOTHING
    if error is None:
        return SUCCEED
    if isinstance(error, _HOPELESS):
        return Outcome(Action.FAIL, error=error)
    if isinstance(error, Retry):
        delay: float | None = error.delay if task.attempts < task.max_attempts else None
    else:
        delay = first_hook_result(plugins, "gta_retry_delay", task=task, error=error)
    if delay is None:
        return Outcome(Action.FAIL, error=error)
    return Outcome(Action.RETRY, delay=float(delay), error=error)


def describe_error(exc: BaseException) -> str:
    """``Type: message`` then the traceback, as stored in ``last_error``."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return f"{one_line(exc)}\n\n{text}"


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``, for logs."""
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__
