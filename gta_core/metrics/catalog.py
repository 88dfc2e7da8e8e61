"""What a supervisor runs, for its sidecar's dashboard: its handlers and its periodic tasks.

The supervisor writes ``catalog.json`` into its multiprocess directory once at start, after
its plugins are loaded and its periodic tasks checked (`write`); the sidecar reads it
(`read`). So the dashboard can show each queue's handlers and schedules, and run a periodic
task now, without importing the application's code into the sidecar (its memory, its import
side effects, its import errors). A periodic task carries the row its run inserts, prepared
by the supervisor exactly as its scheduler prepares each slot's.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..schedules import Periodic, periodic
from ..store.inserts import NewTask
from ..validation import TaskRequest, prepare

CATALOG_FILE = "catalog.json"


@dataclasses.dataclass(frozen=True)
class Handler:
    key: str
    queue: str
    priority: int
    max_attempts: int
    timeout: float | None
    is_async: bool
    plugin: str
    concurrency: int | None = None
    rate_limit: str | None = None


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A periodic task and the row one of its runs inserts (``args`` as JSON text)."""

    name: str
    key: str
    queue: str
    priority: int
    args: str
    max_attempts: int
    every: float | None = None
    cron: str | None = None
    concurrency_key: str | None = None

    @property
    def periodic(self) -> Periodic:
        return periodic(self.name, key=self.key, every=self.every, cron=self.cron)

    @property
    def text(self) -> str:
        """``every 60s`` or ``cron 0 3 * * *``."""
        return f"every {self.every:g}s" if self.every is not None else f"cron {self.cron}"

    def run_now(self) -> NewTask:
        """The row of a run outside the schedule: due now, without the slot's dedupe key."""
        return NewTask(self.key, self.queue, self.priority, self.args, None, self.max_attempts,
                       concurrency_key=self.concurrency_key)


@dataclasses.dataclass(frozen=True)
class Catalog:
    handlers: tuple[Handler, ...] = ()
    schedules: tuple[Schedule, ...] = ()

    def schedule(self, name: str) -> Schedule | None:
        return next((schedule for schedule in self.schedules if schedule.name == name), None)

    def of_queue(self, queue: str) -> tuple[list[Handler], list[Schedule]]:
        return ([handler for handler in self.handlers if handler.queue == queue],
                [schedule for schedule in self.schedules if schedule.queue == queue])


def build(runtime: Any, periodics: Sequence[Periodic]) -> Catalog:
    """The catalog of a started supervisor (``runtime``: its `Runtime`; ``periodics``: checked)."""
    registry = runtime.plugins.registry
    handlers = tuple(Handler(key, definition.queue, definition.priority, definition.max_attempts, definition.timeout,
                             definition.is_async, registry.owners[key], definition.concurrency,
                             str(definition.rate_limit) if definition.rate_limit else None)
                     for key, definition in sorted(registry.tasks.items()))
    schedules = []
    for job in periodics:
        row = prepare(runtime, TaskRequest(job.key, job.args, queue=job.queue, priority=job.priority))
        schedules.append(Schedule(job.name, job.key, row.queue, row.priority, row.args, row.max_attempts, job.every,
                                  job.cron.expression if job.cron else None, row.concurrency_key))
    return Catalog(handlers, tuple(schedules))


def write(catalog: Catalog, directory: Path) -> None:
    """Replace the catalog file atomically."""
    temporary = directory / f".{CATALOG_FILE}.tmp"
    temporary.write_text(json.dumps(dataclasses.asdict(catalog)))
    os.replace(temporary, directory / CATALOG_FILE)


def read(directory: Path) -> Catalog:
    """The supervisor's catalog, or an empty one before it is written (or if it cannot be read)."""
    try:
        data = json.loads((directory / CATALOG_FILE).read_text())
        return Catalog(tuple(Handler(**item) for item in data["handlers"]),
                       tuple(Schedule(**item) for item in data["schedules"]))
    except (OSError, ValueError, TypeError, KeyError):
        return Catalog()
