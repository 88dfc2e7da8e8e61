"""Task metrics, fed by the batched lifecycle hook: the built-in ``metrics`` plugin.

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
The supervisor creates them at start (`gta_supervisor_started`) with every series whose label
values it knows (each registered task on its queue, each outcome) at 0: a counter that is
absent until its first event is invisible to ``rate()`` and to the shipped alerts.
"""
from __future__ import annotations

import bisect
import dataclasses
import functools
import os
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from gta_core import hookimpl
from gta_core.metrics.multiproc import ENV

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
           600.0, 1800.0, 3600.0)


OUTCOMES = ("succeeded", "retried", "failed")


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
    builds a dict, too slow to repeat for each event of a fast task. Creating a child exports
    its series at 0 (in multiprocess mode its value is written to the process's file)."""
    key = (id(metric), labels)  # the metric objects live as long as the process
    found = _children.get(key)
    if found is None:
        found = _children.setdefault(key, metric.labels(*labels))
    return found


def observe_all(histogram: Any, amounts: Sequence[float]) -> None:
    """``histogram.observe(amount)`` for each amount, with one write per bucket touched instead
    of two per amount: each write to a multiprocess value takes a lock and an mmap store, and a
    worker reports a whole batch of successes at once.

    prometheus_client has no public call for this; it reaches into the ``_sum``, ``_buckets``
    and ``_upper_bounds`` a histogram has kept since its 0.1 releases, and
    ``tests/process/test_metrics.py`` checks the result against plain ``observe`` calls.
    """
    if not amounts:
        return
    if len(amounts) == 1:  # most events come alone: skip the pass over every bucket
        histogram.observe(amounts[0])
        return
    bounds = histogram._upper_bounds
    counts = [0] * len(bounds)
    for amount in amounts:
        counts[bisect.bisect_left(bounds, amount)] += 1  # the first bucket whose bound is >= amount
    histogram._sum.inc(sum(amounts))
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(count)


@hookimpl
def gta_supervisor_started(tasks: list[Any], queues: list[str]) -> None:
    """Every task series at 0, for each registered task on its own queue."""
    if ENV not in os.environ:  # metrics are off
        return
    metrics = task_metrics()
    for definition in tasks:
        if definition.family_prefix is not None:  # its keys are known only as tasks arrive
            continue
        labels = (definition.key, definition.queue)
        for metric in (metrics.started, metrics.duration, metrics.wait, metrics.rescued, metrics.lost):
            child(metric, *labels)
        for outcome in OUTCOMES:
            child(metrics.completed, *labels, outcome)


@hookimpl
def gta_task_events(event: str, tasks: list[Any], errors: list[BaseException | None],
                    durations: list[float | None]) -> None:
    if ENV not in os.environ:  # metrics are off
        return
    metrics = task_metrics()
    for labels, group in _by_labels(tasks, durations):
        if event == "started":
            child(metrics.started, *labels).inc(len(group))
            now = time.time()
            observe_all(child(metrics.wait, *labels),
                        [max(0.0, now - task.run_at.timestamp()) for task, _ in group if task.run_at is not None])
        elif event in ("succeeded", "retried", "failed"):
            child(metrics.completed, *labels, event).inc(len(group))
            observe_all(child(metrics.duration, *labels), [duration for _, duration in group if duration is not None])
        elif event == "rescued":
            child(metrics.rescued, *labels).inc(len(group))
            failed = sum(1 for task, _ in group if task.status == "failed")
            for outcome, count in (("failed", failed), ("retried", len(group) - failed)):
                if count:
                    child(metrics.completed, *labels, outcome).inc(count)
        elif event == "lost":
            child(metrics.lost, *labels).inc(len(group))


def _by_labels(tasks: list[Any], durations: list[float | None]
               ) -> Iterable[tuple[tuple[str, str], list[tuple[Any, float | None]]]]:
    """(task, duration) pairs grouped by their (task, queue) label values: one write per series."""
    if len(tasks) == 1:  # most events come alone
        return [((tasks[0].key, tasks[0].queue), [(tasks[0], durations[0])])]
    groups: dict[tuple[str, str], list[tuple[Any, float | None]]] = {}
    for task, duration in zip(tasks, durations, strict=True):
        groups.setdefault((task.key, task.queue), []).append((task, duration))
    return groups.items()
