"""What both runners (threads and asyncio) do around a handler: the checks before the call
(`checked_call`), the buffer of what the handler creates (`Spawned`), and whether its success
may wait for the completer's batch (`plain_success`)."""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from ..config import Settings
from ..errors import Fail
from ..plugins import Registry
from ..runtime import Runtime
from ..scopes import Submission, announce
from ..store.inserts import NewTask
from ..store.workflows import PreparedWorkflow
from ..tasks import TaskContext, TaskDefinition, TaskRecord
from ..validation import TaskRequest, capture_context, prepare
from ..workflows import announce_deferred, prepare_chain, prepare_group


class Spawned:
    """The children, groups and chains one attempt of a task creates (its ``ctx.spawner``):
    each checked when the handler asks, as submit would, and inserted with the attempt's success.

    Called where the handler runs (its thread, or its asyncio task), after the parent's context
    was restored there, so what it creates captures that context as any submit would (a request
    or trace id follows the work it caused).
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.children: list[NewTask] = []
        self.workflows: list[PreparedWorkflow] = []

    def child(self, key: str, args: Mapping[str, Any] | None = None, **options: Any) -> None:
        row = prepare(self.runtime, TaskRequest(key, args, **options), capture_context(self.runtime))
        self.children.append(announce(self.runtime.plugins, Submission([row], deferred=True))[0])

    def group(self, members: list[Any], on_complete: Any) -> None:
        prepared = prepare_group(self.runtime, members, on_complete, capture_context(self.runtime))
        self.workflows.append(announce_deferred(self.runtime, prepared))

    def chain(self, steps: list[Any]) -> None:
        prepared = prepare_chain(self.runtime, steps, capture_context(self.runtime))
        self.workflows.append(announce_deferred(self.runtime, prepared))


def plain_success(task: TaskRecord, ctx: TaskContext, spawned: Spawned, definition: TaskDefinition,
                  result: str | None) -> bool:
    """Whether a success may be batched by the completer: no result, children or groups it
    created or belongs to, its row is kept, and it was not cancelled while it ran (the fence
    refuses that write at once, inside the attempt's scope, where a tracer sees it)."""
    return (not spawned.children and not spawned.workflows and not definition.clean_succeeded and result is None
            and task.group_id is None and not ctx.cancelled)


def checked_call(settings: Settings, registry: Registry, task: TaskRecord) -> tuple[TaskDefinition, dict[str, Any]]:
    """The handler of a leased task and its arguments, after the checks every runner makes before
    calling it (attempts left, a known key, arguments the handler takes, not started too late);
    what fails raises, for `outcomes.decide`."""
    task.check_attempts()
    definition = registry.get(task.key)
    args = task.decoded_args()
    definition.check_args(args)
    check_init_timeout(settings, task, definition)
    return definition, args


def check_init_timeout(settings: Settings, task: TaskRecord, definition: TaskDefinition) -> None:
    """GTA's init_timeout_sensitive: a task that waited too long to start is not run at all.

    The wait counts from the task's due time (``run_at``), so a delayed task is judged by
    how late it starts, not by how far ahead it was scheduled.
    """
    due = task.run_at or task.created_at
    if not definition.init_timeout_sensitive or due is None:
        return
    waited = (dt.datetime.now(dt.timezone.utc) - due).total_seconds()
    if waited > settings.initialized_timeout:
        raise Fail(f"not run: due {waited:.0f}s ago, longer than initialized_timeout "
                   f"({settings.initialized_timeout:g}s), and the task is init_timeout_sensitive")
