"""The two GTABackend stand-ins Django's tests select where they name its built-in backends.

- `ImmediateBackend`: GTABackend whose ``enqueue()`` returns once a real ``gta-supervisor``
  has run the task and its worker's log lines have reached this process, as Django's
  immediate backend returns once it has run it. One attempt, as the immediate backend makes.
- `DummyBackend`: GTABackend whose tasks no worker runs during the test (each is due a day
  later), with the dummy backend's test helpers, on the rows: ``results`` (this backend's
  tasks) and ``clear()``.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import time
from typing import Any

from django.db import connections
from django.tasks import TaskResult
from django.tasks.base import Task

import gta_core
from gta_core.contrib.django import GTABackend

from . import runner

WAIT = 30.0  # seconds a task may take to run in the suite


class ImmediateBackend(GTABackend):
    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.max_attempts = self.options.get("MAX_ATTEMPTS", 1)

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        result = super().enqueue(task, args, kwargs)
        if not connections[self.database].get_autocommit():
            return result  # inside atomic(): no worker can see the task before the commit
        deadline = time.monotonic() + WAIT
        while not (current := self.get_result(result.id)).is_finished:
            if time.monotonic() > deadline:
                raise AssertionError(f"the worker did not run task {result.id} within {WAIT:g}s "
                                     f"(its log: {runner.supervisor_log()})")
            time.sleep(0.01)
        if not runner.log_receiver().wait_finished(result.id, WAIT):
            raise AssertionError(f"the worker's task_finished line for {result.id} did not arrive")
        return current


class DummyBackend(GTABackend):
    HOLD = dt.timedelta(days=1)

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.ids: list[str] = []

    def submit_options(self, task: Task) -> dict[str, Any]:
        options = super().submit_options(task)
        if task.run_after is None:
            options["run_at"] = dt.datetime.now(dt.timezone.utc) + self.HOLD
        return options

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        result = super().enqueue(task, args, kwargs)
        self.ids.append(result.id)
        return result

    @property
    def results(self) -> list[TaskResult]:
        """In async code (where Django refuses database access) read on a thread of its own,
        so that async tests can read them as they read the dummy's list."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # sync code: this thread's connection, in its open transaction
            return [self.get_result(result_id) for result_id in self.ids]
        with concurrent.futures.ThreadPoolExecutor(1) as reader:
            return reader.submit(self._read_on_own_connection).result()

    def _read_on_own_connection(self) -> list[TaskResult]:
        try:
            return [self.get_result(result_id) for result_id in self.ids]
        finally:
            connections.close_all()

    def clear(self) -> None:
        table = gta_core.get_runtime().settings.table
        with connections[self.database].cursor() as cursor:
            for result_id in self.ids:
                cursor.execute(f"DELETE FROM {table} WHERE id = %s", [int(result_id.split(".")[0])])
        self.ids.clear()
