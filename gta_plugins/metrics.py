"""Task metrics, fed by the lifecycle hook: the built-in ``metrics`` plugin.

Events happen in workers (started, succeeded, retried, failed, lost) and in the supervisor
(rescued, and the retried/failed of tasks a dead worker was running); each process counts its
own into prometheus_client, which the supervisor has put in multiprocess mode, and the
sidecar adds them up. Every attempt that starts ends in exactly one ``completed`` outcome:
``succeeded``, ``retried`` (back to pending for another attempt) or ``failed`` (for good).
A rescued lease ends its attempt too, as ``retried`` or ``failed`` by the task's new status;
the late write of the worker that lost that lease is counted as lost, not again as completed.

The metric objects (and prometheus_client itself) are created on the first event, never at
import: a process that only submits tasks never touches prometheus_client, and neither does a
supervisor's worker with metrics off (no multiprocess directory: no sidecar would read them).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import threading
import time
from typing import Any

from gta_core import hookimpl
from gta_core.metrics.multiproc import ENV

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
           600.0, 1800.0, 3600.0)


@dataclasses.dataclass(frozen=True)
class TaskMetrics:
    started: Any
    completed: Any
    duration: Any
    wait: Any
    rescued: Any
    lost: Any


_create_lock = threading.Lock()
_children: dict[tuple[int, tuple[str, ...]], Any] = {}


def task_metrics() -> TaskMetrics:
    """This process's metric objects, created on first use.

    Handler threads of one worker may report their first events at the same moment; the lock
    keeps them from registering the metrics twice (prometheus_client refuses a duplicate).
    """
    with _create_lock:
        return _create_metrics()


@functools.cache
def _create_metrics() -> TaskMetrics:
    from prometheus_client import Counter, Histogram

    labels = ["task", "queue"]
    return TaskMetrics(
        started=Counter("gta_tasks_started_total", "Task attempts started.", labels),
        completed=Counter("gta_tasks_completed_total",
                          "Task attempts ended, by outcome: succeeded, retried or failed.", [*labels, "outcome"]),
        duration=Histogram("gta_task_duration_seconds", "Run time of a task attempt's handler.", labels,
                           buckets=BUCKETS),
        wait=Histogram("gta_task_wait_seconds", "Delay from a task becoming due (run_at) to its attempt starting.",
                       labels, buckets=BUCKETS),
        rescued=Counter("gta_leases_rescued_total", "Expired leases taken back from silent workers.", labels),
        lost=Counter("gta_leases_lost_total", "Outcome writes rejected because the lease had been lost.", labels),
    )


def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once per process: ``.labels()`` takes a lock and
    builds a dict, too slow to repeat for each event of a fast task. A series appears when its
    first event happens, as with ``.labels()`` (no zero series for what never happened)."""
    key = (id(metric), labels)  # the metric objects live as long as the process
    found = _children.get(key)
    if found is None:
        found = _children.setdefault(key, metric.labels(*labels))
    return found


@hookimpl
def gta_task_event(event: str, task: Any, error: BaseException | None, duration: float | None) -> None:
    if ENV not in os.environ:  # metrics are off
        return
    metrics, labels = task_metrics(), (task.key, task.queue)
    if event == "started":
        child(metrics.started, *labels).inc()
        if task.run_at is not None:
            child(metrics.wait, *labels).observe(max(0.0, time.time() - task.run_at.timestamp()))
    elif event in ("succeeded", "retried", "failed"):
        child(metrics.completed, *labels, event).inc()
        if duration is not None:
            child(metrics.duration, *labels).observe(duration)
    elif event == "rescued":
        child(metrics.rescued, *labels).inc()
        child(metrics.completed, *labels, "failed" if task.status == "failed" else "retried").inc()
    elif event == "lost":
        child(metrics.lost, *labels).inc()
