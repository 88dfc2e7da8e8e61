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
import traceback
from typing import Any

from .errors import Fail, InvalidArguments, Retry, UnknownTask
from .plugins import Plugins, first_hook_result


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
        """What goes into ``last_error``."""
        return describe_error(self.error) if self.error is not None else ""


SUCCEED = Outcome(Action.SUCCEED)
NOTHING = Outcome(Action.NOTHING)

#: errors no retry can cure: the task fails at once
_HOPELESS = (Fail, UnknownTask, InvalidArguments)


def decide(plugins: Plugins, task: Any, error: BaseException | None, *, lease_lost: bool = False) -> Outcome:
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
