"""The database-derived gauges: queue depth, age of the oldest due task, abnormal tasks, paused
queues, and due tasks that no live supervisor handles.

They are read by one thread with one connection, on demand and at most once per
``min_interval`` however often Prometheus (or a probe) asks; the queries touch only pending,
running and waiting rows (`TaskStore.pending_by_key`, `TaskStore.running_summary`,
`TaskStore.waiting_summary`) and the small queues and supervisors tables. A request waits
at most ``timeout`` for an answer, so a hung database turns into "unhealthy", never into a
hung probe. The values are the whole table's, so several supervisors on one database all
report the same numbers: aggregate them with ``max``, not ``sum``.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from ..config import Settings
from ..db.connect import drop_connection, open_database
from ..store.roster import supervisors, unhandled
from ..store.task_store import TaskStore, summarize_by_queue
from .health import DatabaseCheck

log = logging.getLogger("gta.metrics")

STATUSES = ("pending", "running", "waiting")
KINDS = ("initialized_timeout", "running_timeout")
#: most (queue, task) series of ``gta_unhandled_tasks``, those with the most tasks waiting: a
#: flood of unknown keys must not flood Prometheus with series
UNHANDLED_SERIES = 50
OTHER = "__other__"  # the queue label of every queue beyond the cap, summed


@dataclasses.dataclass(frozen=True)
class QueueStats:
    """One reading of the task table (``error`` set and nothing else when it failed)."""

    taken_at: float  # time.monotonic() when the reading started
    depth: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)  # (queue, status)
    oldest_age: dict[str, float] = dataclasses.field(default_factory=dict)
    abnormal: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)  # (queue, kind)
    paused: dict[str, bool] = dataclasses.field(default_factory=dict)  # every queue ever paused (`gta pause`)
    unhandled: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)  # (queue, task key)
    error: str | None = None

    @property
    def check(self) -> DatabaseCheck:
        return DatabaseCheck(self.error is None, self.error)


def read_stats(store: TaskStore, settings: Settings) -> QueueStats:
    stats = QueueStats(time.monotonic())
    groups = store.pending_by_key(settings.initialized_timeout)
    for queue, count, oldest, overdue, now in summarize_by_queue(groups):
        stats.depth[queue, "pending"] = count
        stats.abnormal[queue, "initialized_timeout"] = overdue
        if oldest is not None and now is not None:
            stats.oldest_age[queue] = max(0.0, (now - oldest).total_seconds())
    for queue, count, stuck in store.running_summary(settings.running_timeout):
        stats.depth[queue, "running"] = count
        stats.abnormal[queue, "running_timeout"] = stuck
    for queue, count in store.waiting_summary().items():
        stats.depth[queue, "waiting"] = count
    for control in store.queue_controls():
        stats.paused[control.name] = control.paused
    roster = supervisors(store)
    for state in roster:  # every task a live supervisor has, at 0 on its own queue (as the task counters)
        if state.live:
            stats.unhandled.update({(queue, key): 0 for key, queue in state.keys.items()})
    for group in unhandled(groups, roster)[:UNHANDLED_SERIES]:
        stats.unhandled[group.queue, group.key] = group.waiting
    return stats


class QueueProbe:
    """Answers `stats` from a cache at most ``min_interval`` old, refreshed on its own thread."""

    def __init__(self, settings: Settings, min_interval: float = 1.0, statement_timeout: float = 2.0) -> None:
        self.settings = settings
        self.min_interval = min_interval
        self.statement_timeout = statement_timeout
        self._cond = threading.Condition()
        self._latest: QueueStats | None = None
        self._readings = 0
        self._wanted = False
        self._thread: threading.Thread | None = None

    def stats(self, timeout: float) -> QueueStats:
        with self._cond:
            if self._latest is not None and time.monotonic() - self._latest.taken_at < self.min_interval:
                return self._latest
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="gta-metrics-db", daemon=True)
                self._thread.start()
            readings = self._readings
            self._wanted = True
            self._cond.notify_all()
            if not self._cond.wait_for(lambda: self._readings != readings, timeout) or self._latest is None:
                return QueueStats(time.monotonic(), error=f"the database did not answer within {timeout:g}s")
            return self._latest

    def _run(self) -> None:
        db = open_database(self.settings.database_url, statement_timeout=self.statement_timeout)
        store = TaskStore(db, self.settings.table)
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._wanted)
                self._wanted = False
                if self._latest is not None and time.monotonic() - self._latest.taken_at < self.min_interval:
                    self._readings += 1  # asked for while the last reading ran: that one answers
                    self._cond.notify_all()
                    continue
            try:
                stats = read_stats(store, self.settings)
            except Exception as exc:  # any failure is the answer "database unhealthy", never a dead thread
                drop_connection(db)
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                log.warning("metrics: reading the task table failed: %s", reason)
                stats = QueueStats(time.monotonic(), error=reason)
            with self._cond:
                self._latest = stats
                self._readings += 1
                self._cond.notify_all()


def named_queues(stats: QueueStats, served: tuple[str, ...], limit: int) -> set[str]:
    """The queues exported under their own name: those this supervisor serves, then the paused
    ones, then the busiest (pending + running), until there are ``limit``."""
    load: dict[str, int] = {}
    for (queue, _), count in stats.depth.items():
        load[queue] = load.get(queue, 0) + count
    named = set(served)
    for queue in sorted(set(load) | set(stats.paused), key=lambda q: (not stats.paused.get(q), -load.get(q, 0), q)):
        if len(named) >= limit:
            break
        named.add(queue)
    return named


class QueueCollector:
    """A prometheus_client collector exporting one `QueueStats` reading per scrape.

    Whoever submits a task picks its queue's name, so the number of queue label values is
    capped at ``limit`` (`named_queues`); the other queues are summed under the label `OTHER`
    (their oldest age is the oldest of theirs, ``paused`` is 1 if one of them is).
    """

    def __init__(self, probe: QueueProbe, queues: tuple[str, ...], timeout: float, limit: int) -> None:
        self.probe = probe
        self.queues = queues  # always exported, with zeros, so an empty queue is a 0 and not a gap
        self.timeout = timeout
        self.limit = limit

    def describe(self) -> list[Any]:
        return []  # nothing to check at registration; avoids a reading at that moment

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        stats = self.probe.stats(self.timeout)
        if stats.error is not None:
            return  # no numbers rather than stale ones; /healthz says why
        stats = _folded(stats, named_queues(stats, self.queues, self.limit))
        queues = sorted(set(self.queues) | {queue for queue, _ in stats.depth} | set(stats.paused))
        depth = GaugeMetricFamily("gta_queue_depth", "Tasks pending, running or waiting, by queue and status.",
                                  labels=["queue", "status"])
        oldest = GaugeMetricFamily("gta_oldest_pending_age_seconds",
                                   "Seconds the oldest due pending task of a queue has waited since it became due.",
                                   labels=["queue"])
        abnormal = GaugeMetricFamily("gta_abnormal_tasks",
                                     "Tasks pending past initialized_timeout or running past running_timeout.",
                                     labels=["queue", "kind"])
        paused = GaugeMetricFamily("gta_queue_paused", "1 while the queue is paused (gta pause), else 0.",
                                   labels=["queue"])
        unhandled_tasks = GaugeMetricFamily(
            "gta_unhandled_tasks", "Due tasks that no live supervisor serving their queue has a handler for.",
            labels=["queue", "task"])
        for (queue, key), count in sorted(stats.unhandled.items()):
            unhandled_tasks.add_metric([queue, key], count)
        for queue in queues:
            for status in STATUSES:
                depth.add_metric([queue, status], stats.depth.get((queue, status), 0))
            oldest.add_metric([queue], stats.oldest_age.get(queue, 0.0))
            for kind in KINDS:
                abnormal.add_metric([queue, kind], stats.abnormal.get((queue, kind), 0))
            paused.add_metric([queue], 1 if stats.paused.get(queue) else 0)
        yield from (depth, oldest, abnormal, paused, unhandled_tasks)


def _folded(stats: QueueStats, named: set[str]) -> QueueStats:
    """``stats`` with every queue not in ``named`` summed under `OTHER`."""
    folded = QueueStats(stats.taken_at)
    for (queue, status), count in stats.depth.items():
        key = (queue if queue in named else OTHER, status)
        folded.depth[key] = folded.depth.get(key, 0) + count
    for (queue, kind), count in stats.abnormal.items():
        key = (queue if queue in named else OTHER, kind)
        folded.abnormal[key] = folded.abnormal.get(key, 0) + count
    for queue, age in stats.oldest_age.items():
        label = queue if queue in named else OTHER
        folded.oldest_age[label] = max(age, folded.oldest_age.get(label, 0.0))
    for queue, paused in stats.paused.items():
        label = queue if queue in named else OTHER
        folded.paused[label] = paused or folded.paused.get(label, False)
    for (queue, task), count in stats.unhandled.items():
        labels = (queue if queue in named else OTHER, task)
        folded.unhandled[labels] = folded.unhandled.get(labels, 0) + count
    return folded
