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


@dataclasses.dataclass(frozen=True)
class LabelledMetrics:
    """One (task, queue)'s children of every metric: ``.labels()`` is a dict lookup under a
    lock per call, too slow to repeat for each event of a fast task."""

    started: Any
    succeeded: Any
    retried: Any
    failed: Any
    duration: Any
    wait: Any
    rescued: Any
    lost: Any


_create_lock = threading.Lock()
_labelled: dict[tuple[str, str], LabelledMetrics] = {}


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


def labelled(key: str, queue: str) -> LabelledMetrics:
    """The metrics of one task key on one queue (created once per process)."""
    found = _labelled.get((key, queue))
    if found is None:
        metrics = task_metrics()
        with _create_lock:
            found = _labelled.get((key, queue)) or LabelledMetrics(
                started=metrics.started.labels(key, queue),
                succeeded=metrics.completed.labels(key, queue, "succeeded"),
                retried=metrics.completed.labels(key, queue, "retried"),
                failed=metrics.completed.labels(key, queue, "failed"),
                duration=metrics.duration.labels(key, queue),
                wait=metrics.wait.labels(key, queue),
                rescued=metrics.rescued.labels(key, queue),
                lost=metrics.lost.labels(key, queue),
            )
            _labelled[(key, queue)] = found
    return found


@hookimpl
def gta_task_event(event: str, task: Any, error: BaseException | None, duration: float | None) -> None:
    if ENV not in os.environ:  # metrics are off
        return
    metrics = labelled(task.key, task.queue)
    if event == "started":
        metrics.started.inc()
        if task.run_at is not None:
            metrics.wait.observe(max(0.0, time.time() - task.run_at.timestamp()))
    elif event in ("succeeded", "retried", "failed"):
        getattr(metrics, event).inc()
        if duration is not None:
            metrics.duration.observe(duration)
    elif event == "rescued":
        metrics.rescued.inc()
        (metrics.failed if task.status == "failed" else metrics.retried).inc()
    elif event == "lost":
        metrics.lost.inc()
