"""A task's history: ``gta_core.attempts(task_id)``, every attempt and operator action in order.

Each `Attempt` says when the attempt was leased, when and how it ended, which worker ran it,
its error (the exception's real class path, its message and traceback) and the retry delay
the policy chose; an operator's action (an operator retry, a cancel) says who took it. The
entries come from the attempt log (`store.attempts`), which the outcome writes keep in their own
transactions, and the last one may come from the task row itself: the attempt that is running
now, or the success that ended the task (a plain success is not logged twice: the row holds it).

Django's ``TaskResult`` reads its fields from here directly: ``errors`` are the entries with an
``exception_class_path`` (and ``traceback``), ``worker_ids`` the ``worker`` of each attempt,
``started_at`` the first attempt's ``started_at`` and ``last_attempted_at`` the last one's.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

from .handles import OWN_TRANSACTION
from .handles.api_errors import gta_errors
from .handles.peewee import database_of
from .runtime import get_runtime
from .store.attempts import (
    CANCELLED,
    FAILED,
    RELEASED,
    RERUN,
    RESCUED,
    RETRIED,
    RUNNING,
    SUCCEEDED,
    TIMED_OUT,
    WORKER_DIED,
)
from .store.rows import parse_timestamp
from .submit import task_id_list

#: every ``Attempt.outcome``, in the order a task's life may show them
OUTCOMES = (RUNNING, SUCCEEDED, RETRIED, FAILED, TIMED_OUT, WORKER_DIED, RESCUED, CANCELLED, RELEASED, RERUN)


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One entry of a task's history: an attempt (leased, then ended one way or another, or
    running now) or an operator's action. Timestamps are aware UTC."""

    task_id: int
    #: the attempt's number, 1 for the first (an operator retry starts the count again); for an
    #: action, the attempts counted before it
    number: int
    #: ``running`` (now), ``succeeded``, ``retried``, ``failed``, ``timed_out``, ``worker_died``,
    #: ``rescued`` (lease expired and taken back), ``cancelled``, ``released`` (handed back unrun,
    #: not counted) or ``rerun`` (an operator put the task back to pending)
    outcome: str
    #: when the lease began (the handler starts then, or a little later if it was prefetched);
    #: None for an action on a task that was not running
    started_at: dt.datetime | None
    #: when it ended (database clock); None while running
    ended_at: dt.datetime | None
    #: the lease owner that held it, ``host:supervisor-pid.worker-slot:token`` (see `host`)
    worker: str | None
    #: the class of the exception it ended with, ``module.QualifiedName`` (``builtins.ValueError``)
    exception_class_path: str | None = None
    #: the error's message (for a release, why it was handed back; for a cancel, how)
    error: str | None = None
    #: the formatted traceback, ending with the ``Type: message`` line
    traceback: str | None = None
    #: seconds until the next attempt when the task was put back to pending; None: no retry followed
    retry_delay: float | None = None
    #: who took an operator's action: ``cli:user@host``, ``dashboard``, ``api:user@host``
    actor: str | None = None
    #: its number in the task's log (the entry from the task row follows the last logged one)
    seq: int = 0
    #: entries dropped just before this one, beyond the ``attempts_kept`` first and last
    dropped_before: int = 0

    @property
    def host(self) -> str | None:
        """The host of the worker that held it (the lease owner's first part)."""
        return self.worker.split(":", 1)[0] if self.worker else None

    @property
    def duration(self) -> float | None:
        """Seconds from the lease to the end; None while running or for an action."""
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()

    @property
    def is_action(self) -> bool:
        """An operator's action on a task that was not running (an operator retry, a cancel of a
        pending task); a cancel of a running task ends its attempt and is both."""
        return self.started_at is None


@gta_errors
def attempts(task_id: int, db: Any = OWN_TRANSACTION) -> list[Attempt] | None:
    """Task ``task_id``'s attempts and operator actions, oldest first, or None when no row has
    that id (it never existed, or cleanup deleted it, taking its history with it).

    ``db`` is a handle as for `submit` (by default GTA's own connection). The log and the row
    are read in one statement, so the history and the task's state agree.
    """
    (checked,) = task_id_list([task_id])
    runtime = get_runtime()
    logged, current = runtime.store_for(database_of(db, runtime, "db")).attempt_entries(checked)
    return None if current is None else timeline(checked, logged, current)


def timeline(task_id: int, logged: Sequence[Sequence[Any]], current: Sequence[Any]) -> list[Attempt]:
    """The history from the log's entries (`TaskStore.attempt_entries`) and the task row's
    (attempt, status, lease owner, started, finished): the row adds the attempt running now, or
    the success that ended the task, which the log does not hold."""
    history: list[Attempt] = []
    previous = 0
    for seq, number, outcome, worker, started, ended, error_class, error, trace, delay, actor in logged:
        history.append(Attempt(task_id, int(number), str(outcome), parse_timestamp(started), parse_timestamp(ended),
                               worker, error_class, error, trace, None if delay is None else float(delay), actor,
                               int(seq), int(seq) - previous - 1))
        previous = int(seq)
    number, status, owner, started, finished = current
    if status in (RUNNING, SUCCEEDED):
        history.append(Attempt(task_id, int(number), str(status), parse_timestamp(started),
                               parse_timestamp(finished) if status == SUCCEEDED else None, owner,
                               seq=previous + 1))
    return history


__all__ = ["OUTCOMES", "Attempt", "attempts", "timeline"]
