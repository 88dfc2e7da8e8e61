"""The roster of supervisors: which ones are live, the queues each serves and the task keys it
has handlers for; and the due tasks that no live supervisor handles (`unhandled`).

Each supervisor writes its row of ``<table>_supervisors`` at start and renews it every third of
``lease_timeout`` (`supervisor.services.advertiser`); it counts as live until a lease period after its
latest renewal, by the database's clock, and its row goes when it stops. A worker leases only
the task keys it has handlers for, so a task whose handler no live supervisor has, in its queue,
waits: the monitor (``gta_abnormal_tasks`` kind ``unhandled``), the metric
``gta_unhandled_tasks``, ``gta stats`` and the dashboard say so, with the count waiting.
Supervisors of a GTA release that predates the roster advertise nothing: while one runs, the
tasks only it handles are reported too.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any

from ..tasks import covers
from .rows import parse_timestamp
from .task_store import PendingGroup, TaskStore


@dataclasses.dataclass(frozen=True)
class SupervisorState:
    """One supervisor's row: who (``name`` is host:pid:token), what it serves, when it started
    and last renewed its row, and whether it is live (renewed within its lease period)."""

    name: str
    host: str
    pid: int
    queues: tuple[str, ...]
    keys: dict[str, str]  # each task key it has a handler for, with that task's own queue
    started_at: dt.datetime | None
    seen_at: dt.datetime | None
    live: bool

    def handles(self, key: str, queue: str) -> bool:
        """Live, serving ``queue``, and with a handler for ``key``: its own, or its family's."""
        return self.live and queue in self.queues and (key in self.keys or any(covers(name, key) for name in self.keys))


@dataclasses.dataclass(frozen=True)
class Unhandled:
    """Due tasks of task ``key`` in ``queue`` that no live supervisor handles: how many
    (``waiting``), and since when the oldest has been due."""

    key: str
    queue: str
    waiting: int
    oldest_due: dt.datetime | None

    def describe(self) -> str:
        return (f"no live supervisor handles key {self.key!r} in queue {self.queue!r}: "
                f"{self.waiting} due task(s) waiting")


def supervisors(store: TaskStore) -> list[SupervisorState]:
    """Every supervisor in the roster (live or dead and not yet forgotten), by name."""
    return [SupervisorState(name, host, int(pid), _names(queues), _keys(keys), parse_timestamp(started),
                            parse_timestamp(seen), bool(live))
            for name, host, pid, queues, keys, started, seen, live in store.roster()]


def unhandled(groups: Iterable[PendingGroup], roster: Sequence[SupervisorState]) -> list[Unhandled]:
    """The groups of due tasks that no live supervisor of ``roster`` handles, most waiting first."""
    found = [Unhandled(group.key, group.queue, group.due, group.oldest_due) for group in groups
             if group.due and not any(state.handles(group.key, group.queue) for state in roster)]
    return sorted(found, key=lambda item: (-item.waiting, item.queue, item.key))


def unhandled_now(store: TaskStore, overdue_after: float = 0.0) -> list[Unhandled]:
    """`unhandled` as the database stands now (reads pending rows and the roster)."""
    return unhandled(store.pending_by_key(overdue_after), supervisors(store))


def _names(text: Any) -> tuple[str, ...]:
    """A JSON list of names from the roster; nothing for a value edited into something else."""
    names = _json(text)
    return tuple(name for name in names if isinstance(name, str)) if isinstance(names, list) else ()


def _keys(text: Any) -> dict[str, str]:
    """The roster's JSON object of task keys and their queues (see `_names`)."""
    keys = _json(text)
    if not isinstance(keys, dict):
        return {}
    return {key: queue for key, queue in keys.items() if isinstance(queue, str)}


def _json(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError, RecursionError):
        return None


__all__ = ["SupervisorState", "Unhandled", "supervisors", "unhandled", "unhandled_now"]
