"""The whole plugin contract: every hook GTA calls, with the arguments it passes.

Plugins implement these with ``@gta_core.hookimpl``. A plugin is a module or object
registered through the ``gta_handlers`` entry point group, ``--plugin module.path`` or
``GTA_PLUGINS``. Hook errors are logged and counted by the engine; one faulty plugin does
not stop a worker.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import pluggy

PROJECT = "gta"
ENTRY_POINT_GROUP = "gta_handlers"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def gta_handlers(gta: Any) -> list[Any]:  # type: ignore[empty-body]
    """Return this plugin's task definitions (objects made by ``@gta_core.task``).

    ``gta``, like in every hook that takes it, is this process's `gta_core.runtime.Runtime`:
    its ``settings`` and ``store`` (opened on first use). A plugin needs no global to read
    them; an implementation may leave the argument out (pluggy passes only what it names).

    Two definitions with one key, across all plugins, fail at start.
    """


@hookspec(firstresult=True)
def gta_retry_delay(task: Any, error: BaseException, gta: Any) -> float | None:  # type: ignore[empty-body]
    """Seconds until the next attempt of ``task`` after ``error``, or None to give up.

    ``task`` is the `TaskRecord` whose attempt just failed (``task.attempts`` counts it);
    ``error`` is what the handler raised, or `TaskTimeout`, `WorkerDied` or `LeaseExpired`
    (rescue took back a lease nobody renewed) for attempts that ended without one. The rule
    that asks is `gta_core.outcomes.decide`.
    The first non-None answer wins; the built-in ``retry`` plugin answers with capped
    exponential backoff with jitter and None once ``max_attempts`` is reached. If every
    plugin answers None, the task fails.
    """


@hookspec
def gta_periodic(gta: Any) -> list[Any]:  # type: ignore[empty-body]
    """Return periodic task definitions (interval or cron-like schedules).

    Each slot is enqueued once cluster-wide, with dedupe key ``periodic:<name>:<slot>``.
    """


@hookspec
def gta_abnormal_tasks(kind: str, tasks: list[Any]) -> None:
    """Called by the monitor with tasks of one ``kind``.

    Kinds: ``running_timeout`` (running too long), ``initialized_timeout`` (pending too long),
    ``rescued`` (lease expired and was taken back), ``failed`` (newly failed) and ``unhandled``
    (due, but no live supervisor serving the task's queue has a handler for its key: see
    `gta_core.store.roster`; at most 1,000 per key and queue).
    Each task is a dict of the row's columns (``id``, ``key``, ``queue``, ``status``,
    ``attempts``, ``last_error``, timestamps as aware UTC datetimes, ...). Called in the worker
    running the built-in ``monitor`` task, at most once per kind and run.
    """


@hookspec
def gta_task_event(event: str, task: Any, error: BaseException | None, duration: float | None) -> None:
    """Observe a task's lifecycle; metrics and tracing plug in here.

    ``event`` is one of ``started``, ``succeeded``, ``retried``, ``failed``, ``rescued``
    (an expired lease taken back: ``task.status`` says whether it is ``pending`` again or
    ``failed``), ``lost`` (a write rejected by the lease fence) or ``cancelled`` (a write
    rejected because the task was cancelled while it ran). Leases given back unrun
    (shutdown, a dead worker's other tasks) report no event. ``error`` is the
    exception for retried/failed, ``duration`` the handler's run time in seconds for
    succeeded/retried/failed. Called in the process where the event happened.

    A plugin that implements `gta_task_events` is not called here: it gets every event there.
    """


@hookspec
def gta_task_events(event: str, tasks: list[Any], errors: list[BaseException | None],
                    durations: list[float | None]) -> None:
    """Observe several tasks that had the same lifecycle event at once: `gta_task_event` for
    plugins that aggregate, such as metrics.

    A worker records plain successes in batches; reporting such a batch in one call lets a
    counter be written once per batch instead of once per task, which is a noticeable share of
    a short task's cost. ``errors`` and ``durations`` are aligned with ``tasks``, meaning what
    ``error`` and ``duration`` mean for `gta_task_event`. Events that happen one at a time
    (``started``, say) come as lists of one. A plugin implementing this hook receives every
    event through it, and is not called through `gta_task_event` as well.
    """


@hookspec
def gta_supervisor_started(tasks: list[Any], queues: list[str]) -> None:
    """Called once in a supervisor, after its plugins are loaded and before its first worker
    starts, with every registered task definition and the queues it serves.

    A plugin prepares what it reports here: the metrics plugin exports every task series at 0
    so that ``rate()`` and alerts see a series before its first event.
    """


@hookspec
def gta_capture_context() -> dict[str, Any] | None:  # type: ignore[empty-body]
    """At submit, return JSON-serializable context to carry to the handler (trace ids, tenant).

    The dicts of all plugins are merged and stored in the task's ``context`` column.
    """


@hookspec
def gta_restore_context(context: dict[str, Any]) -> None:
    """In the worker, before the handler runs, restore what `gta_capture_context` captured."""


# -- scopes ------------------------------------------------------------------------------------
# The three hooks below return a context manager (or None) that GTA holds around a piece of its
# work, on the thread or in the asyncio task doing it (`gta_core.scopes`). The hooks above
# cannot serve a tracer: `gta_capture_context` runs once per call before the rows exist (it
# cannot give each task of a batch its own context, or see ids or a failed insert), and the
# lifecycle events are separate calls, on other threads for batched successes, so nothing could
# be current while a handler runs. What a scope's context manager raises is logged and counted;
# it never replaces or swallows the work's own exception.


@hookspec
def gta_submit(submission: Any, gta: Any) -> AbstractContextManager[None] | None:
    """A context manager to hold around the writing of submitted tasks, or None.

    ``submission`` is a `gta_core.scopes.Submission`: the checked rows about to be written,
    to which the context manager may add, on entering, what each carries to its handler
    (`Submission.carry`: the ``context`` column, written with the row in the caller's
    transaction, so a rolled-back submit leaves nothing behind), and their ids once written.
    Held around `submit`/`submit_many`, `asubmit`/`asubmit_many`, `group`, `chain`, the
    periodic scheduler's insert (in the supervisor) and, with ``submission.deferred`` set, the
    checking of a handler's ``ctx.submit``/``ctx.group``/``ctx.chain`` (whose rows are written
    later, with the handler's success). Entered in the submitter's thread, after the arguments
    were checked; a write that fails raises through it.
    """


@hookspec
def gta_attempt(attempt: Any, gta: Any) -> AbstractContextManager[None] | None:
    """A context manager to hold around one attempt of a task in a worker, or None.

    ``attempt`` is a `gta_core.scopes.Attempt`: the leased task and the worker. Entered on the
    thread (or in the asyncio task) that runs the handler, before its checks, and exited once
    the attempt's outcome is written, or handed to the batch of plain successes; so what the
    handler does, and the children it submits, happen inside it. ``attempt.outcome`` is the
    outcome rule's decision (`gta_core.outcomes.Outcome`) by the time it exits; a write the
    fence rejects reports ``lost`` or ``cancelled`` (`gta_task_event`) inside it.
    """


@hookspec
def gta_settle(kind: str, worker: str | None, gta: Any) -> AbstractContextManager[None] | None:
    """A context manager to hold around the supervisor's settling of tasks whose worker
    cannot, or None.

    ``kind`` is ``rescue`` (a batch of expired leases taken back; ``worker`` None) or
    ``janitor`` (the leases of a dead worker, whose lease owner ``worker`` is). The lifecycle
    events of the tasks it settles (``rescued``; ``retried``, ``failed`` or ``succeeded``) are
    reported inside it, on the same thread. A rescue round that finds nothing is a scope too.
    """


@hookspec
def gta_worker_stopped(gta: Any) -> None:
    """Called in a worker process that stopped serving (a graceful stop, or a recycle after
    ``max_tasks_per_worker``) just before it exits, which it does without running ``atexit``
    handlers: flush what the plugin buffers (spans, say) now.
    """
