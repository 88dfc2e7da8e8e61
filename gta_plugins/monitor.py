"""The built-in monitor: a periodic task that reports abnormal tasks through a hook.

Each run (task key ``gta_monitor``, enqueued once per slot cluster-wide by the supervisors'
periodic scheduler, every ``monitor_interval``) calls ``gta_abnormal_tasks(kind, tasks)`` once
per kind that has tasks:

- ``running_timeout``: running for longer than ``running_timeout``;
- ``initialized_timeout``: due (pending) for longer than ``initialized_timeout``;
- ``rescued``: their lease expired and a supervisor took it back since the last run;
- ``failed``: failed for good since the last run;
- ``unhandled``: due, with a task key that no live supervisor serving their queue has a handler
  for (a rolling deploy, a host's plugins mis-set: workers lease only the keys they know, so
  these wait, unharmed, until such a supervisor is up; see `gta_core.store.roster`).

The first two and the last are states: a task stays reported on every run while it is stuck. The last two
are events, reported for a window that starts where the previous successful run's window
ended. That watermark lives in the table itself (the start of the latest succeeded run among
the previous slots), so every supervisor agrees on it, and a run that crashed or hung does
not move it: the next run covers its window too. Reports are at least once: overlapping or
retried runs may repeat a task, never skip one.

A hung run is killed at the task's timeout (twice the interval, at least 5 s); the next slot is
another row and runs regardless, and lease rescue is the supervisors' own job (their janitor
thread), never the monitor's. ``tasks`` are dicts of every column, as ``TaskStore.get`` returns.
The default implementation below (trylast) logs one warning per kind with ids and keys.
Disable the whole monitor with ``--disable-plugin monitor``.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from gta_core import Periodic, Settings, TaskContext, TaskDefinition, get_runtime, hookimpl, periodic, task
from gta_core.plugins import call_hook_safely
from gta_core.runtime import Runtime
from gta_core.store.roster import unhandled_now
from gta_core.store.task_store import TaskStore

log = logging.getLogger("gta.monitor")

KEY = "gta_monitor"
NAME = "monitor"
KINDS = ("running_timeout", "initialized_timeout", "rescued", "failed", "unhandled")
#: built-in tasks jump the queue: a backlog is exactly when the monitor must still run
PRIORITY = 1000
#: most tasks reported per kind and run
LIMIT = 1000
#: how many previous slots the watermark is looked up in; the window never reaches further back
LOOKBACK_SLOTS = 60
#: an event is reported by the run whose start is at least this much later, so that a write
#: committed a moment after its timestamp was taken is not missed by the run that looked too early
SETTLE = dt.timedelta(seconds=1)
SHOWN = 20  # ids listed per warning line


def monitor_timeout(settings: Settings) -> float:
    return max(5.0, 2 * settings.monitor_interval)


def monitor(ctx: TaskContext) -> dict[str, int]:
    """Find abnormal tasks and report each kind through ``gta_abnormal_tasks``; counts by kind."""
    runtime = get_runtime()
    store, settings = runtime.store, runtime.settings
    me = store.get(ctx.task_id)
    if me is None or me["started_at"] is None:  # cancelled and gone meanwhile
        return {}
    until = me["started_at"] - SETTLE
    since = watermark(store, me["dedupe_key"], until, settings.monitor_interval)
    found = {
        "running_timeout": store.running_too_long(settings.running_timeout, LIMIT),
        "initialized_timeout": store.pending_too_long(settings.initialized_timeout, LIMIT),
        "rescued": store.rescued_between(since, until, LIMIT),
        "failed": store.failed_between(since, until, LIMIT),
        "unhandled": [task for group in unhandled_now(store)
                      for task in store.pending_due(group.key, group.queue, LIMIT)],
    }
    for kind, tasks in found.items():
        if tasks:
            call_hook_safely(runtime.plugins, "gta_abnormal_tasks", kind=kind, tasks=tasks)
    return {kind: len(tasks) for kind, tasks in found.items()}


def watermark(store: TaskStore, dedupe_key: str | None, until: dt.datetime, every: float) -> dt.datetime:
    """Where this run's event window starts: where the latest successful previous run's ended."""
    prefix = f"periodic:{NAME}:"
    lookback = dt.timedelta(seconds=every * LOOKBACK_SLOTS)
    if not (dedupe_key and dedupe_key.startswith(prefix) and dedupe_key[len(prefix):].isdigit()):
        return until - dt.timedelta(seconds=every)  # a run submitted by hand: the last interval
    slot = int(dedupe_key[len(prefix):])
    previous = store.latest_start([f"{prefix}{slot - back}" for back in range(1, LOOKBACK_SLOTS + 1)])
    if previous is None:
        return until - lookback
    return max(previous - SETTLE, until - lookback)


@hookimpl
def gta_handlers(gta: Runtime) -> list[TaskDefinition]:
    settings = gta.settings
    return [task(key=KEY, max_attempts=2, timeout=monitor_timeout(settings), priority=PRIORITY)(monitor)]


@hookimpl
def gta_periodic(gta: Runtime) -> list[Periodic]:
    settings = gta.settings
    # the first queue this supervisor serves: whichever supervisor enqueues a slot also runs it
    return [periodic(NAME, key=KEY, every=settings.monitor_interval, queue=settings.queues[0], priority=PRIORITY)]


@hookimpl(trylast=True)
def gta_abnormal_tasks(kind: str, tasks: list[Any]) -> None:
    """The default report: one warning per kind, with ids and keys; for ``unhandled``, one per
    task key and queue, saying that no live supervisor handles it and how many wait."""
    if kind == "unhandled":
        groups: dict[tuple[str, str], list[Any]] = {}
        for item in tasks:
            groups.setdefault((item["key"], item["queue"]), []).append(item)
        for (key, queue), waiting in groups.items():
            count = f"at least {LIMIT}" if len(waiting) >= LIMIT else str(len(waiting))
            log.warning("no live supervisor handles key %r in queue %r: %s due task(s) waiting (%s)", key, queue,
                        count, _ids(waiting))
        return
    log.warning("abnormal tasks, %s: %d task(s): %s", kind, len(tasks), _ids(tasks, with_keys=True))


def _ids(tasks: list[Any], with_keys: bool = False) -> str:
    """The first `SHOWN` ids (with their keys), and how many more."""
    shown = ", ".join(f"{item['id']} ({item['key']})" if with_keys else str(item["id"]) for item in tasks[:SHOWN])
    return shown + (f" and {len(tasks) - SHOWN} more" if len(tasks) > SHOWN else "")
