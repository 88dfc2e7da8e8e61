"""Eager mode for applications' unit tests: handlers run inline right after commit.

    from gta_core.testing import eager

    def test_signup_sends_mail(db):
        with eager() as run:
            with db.atomic() as tx:
                signup(tx, "ada@example.com")      # calls gta_core.submit(tx, "send_email", ...)
        assert run.outcomes("send_email") == ["succeeded"]

Submits are checked exactly as in production (JSON args, known key, signature), but nothing
is written to the task table: the handler runs when the caller's transaction commits, and
never when it rolls back. What becomes of an attempt is decided by the same rule as in a
worker (`gta_core.outcomes`), except that a retry runs at once (no waiting): `Retry` re-runs
the handler until ``max_attempts``, `Fail` fails it. Other exceptions propagate by default so
a test sees them; with ``propagate=False`` they go through the retry policy as in production. Children a
handler submits with ``ctx.submit`` run right after their parent succeeded (never after it
failed), each once, with ``parent_id`` set; delays are not waited for. An ``async def`` handler
runs to its end on an event loop of its own (`worker.coroutines.run_to_end`), also when the submit
comes from inside a running loop (an async test, `asubmit`). Global limits (``concurrency``,
``rate_limit``, `gta_core.limit_queue`) are ignored: handlers run inline, one at a time, at once.
``gta_core.result(task_id)`` and ``gta_core.wait(task_id)`` answer from the run: the handler's
return value once it succeeded, ``pending`` before the caller's transaction committed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from .errors import TaskControl
from .outcomes import Action, decide, one_line
from .results import TaskResult
from .runtime import Runtime, get_runtime
from .store.inserts import NewTask
from .tasks import TaskContext, TaskRecord
from .validation import TaskRequest, capture_context, prepare
from .worker.coroutines import run_to_end

log = logging.getLogger("gta.testing")


@dataclasses.dataclass
class EagerResult:
    task_id: int
    key: str
    args: dict[str, Any]
    outcome: str  # succeeded | failed
    attempts: int
    value: Any = None
    error: BaseException | None = None
    parent_id: int | None = None


@dataclasses.dataclass
class EagerRun:
    """What eager mode ran, in order."""

    propagate: bool = True
    results: list[EagerResult] = dataclasses.field(default_factory=list)
    issued: int = 0  # the last id given out
    _ids: Iterator[int] = dataclasses.field(default_factory=lambda: itertools.count(1))

    def outcomes(self, key: str | None = None) -> list[str]:
        return [result.outcome for result in self.results if key is None or result.key == key]

    def next_id(self) -> int:
        task_id = next(self._ids)
        self.issued = task_id
        return task_id

    def result(self, task_id: int) -> TaskResult | None:
        """What `gta_core.result` answers in eager mode: the task's outcome and its handler's
        return value, ``pending`` for a task whose transaction has not committed yet, None for
        an id this run never gave out."""
        ran = [result for result in self.results if result.task_id == task_id]
        if ran:
            last = ran[-1]
            error = one_line(last.error) if last.error is not None and last.outcome == "failed" else None
            return TaskResult(last.outcome, last.value if last.outcome == "succeeded" else None, error)
        return TaskResult("pending") if 0 < task_id <= self.issued else None

    def execute(self, runtime: Runtime, task_id: int, key: str, args_text: str, context_text: str | None,
                queue: str, max_attempts: int, parent_id: int | None = None) -> None:
        """Run one submitted task to a final outcome, as a worker would (minus the database),
        then the children its successful attempt submitted."""
        definition = runtime.plugins.registry.get(key)
        args = json.loads(args_text)
        context = json.loads(context_text) if context_text else {}

        def result(outcome: str, attempt: int, **extra: Any) -> None:
            self.results.append(EagerResult(task_id, key, args, outcome, attempt, parent_id=parent_id, **extra))

        for attempt in range(1, max_attempts + 1):
            children = EagerChildren(runtime)
            ctx = TaskContext(task_id, key, attempt, max_attempts, queue, context,
                              logging.LoggerAdapter(logging.getLogger(f"gta.task.{key}"), {"task_id": task_id}),
                              spawner=children)
            try:
                value = run_to_end(definition.fn(ctx, **args))  # async handlers too
            except Exception as exc:
                if self.propagate and not isinstance(exc, TaskControl):
                    result("failed", attempt, error=exc)
                    raise
                record = TaskRecord(task_id, key, queue, args_text, context_text, attempt, max_attempts)
                if decide(runtime.plugins, record, exc).action is Action.RETRY:
                    continue  # at once: eager mode never waits
                result("failed", attempt, error=exc)
                return
            result("succeeded", attempt, value=value)
            for child in children.rows:
                self.execute(runtime, self.next_id(), child.key, child.args, child.context, child.queue,
                             child.max_attempts, parent_id=task_id)
            return


class EagerChildren:
    """A handler's ``ctx.submit`` in eager mode: each child checked at once and run after its
    parent succeeded. Groups and chains are not run eagerly (`gta_core.workflows` refuses them)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.rows: list[NewTask] = []

    def child(self, key: str, args: Mapping[str, Any] | None = None, **options: Any) -> None:
        self.rows.append(prepare(self.runtime, TaskRequest(key, args, **options), capture_context(self.runtime)))

    def group(self, members: list[Any], on_complete: Any) -> None:
        raise RuntimeError("ctx.group is only available inside a running task")

    def chain(self, steps: list[Any]) -> None:
        raise RuntimeError("ctx.chain is only available inside a running task")


@contextlib.contextmanager
def eager(propagate: bool = True) -> Iterator[EagerRun]:
    """Run submitted tasks inline after commit for the duration of the block."""
    runtime = get_runtime()
    run = EagerRun(propagate=propagate)
    previous, runtime.eager = runtime.eager, run
    try:
        yield run
    finally:
        runtime.eager = previous
