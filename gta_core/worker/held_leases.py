"""The book of leases one worker process holds, shared by the worker's rooms.

Leasing adds tasks to it, the runner and the completer settle them, the heartbeat renews them
and the supervisor learns nothing from it (it reads the shared `worker.channel.WorkerChannel`). One
lock guards every field, so each room sees a consistent picture.
"""
from __future__ import annotations

import threading

from ..config import Settings
from ..store.task_store import TaskStore
from ..tasks import TaskContext, TaskRecord
from .channel import WorkerChannel

PACE_WEIGHT = 0.2  # weight of the newest task in the moving average of task run time


class HeldLeases:
    """Every lease this worker holds and what is known about each, all under `lock`."""

    def __init__(self, lease_timeout: float) -> None:
        self.lease_timeout = lease_timeout
        self.lock = threading.Lock()
        self.inflight: dict[int, TaskRecord] = {}
        # until when (monotonic) each held lease surely lasts: the lease's or last renewal's
        # send time plus lease_timeout (the database set it later, so it lasts at least that)
        self.held_until: dict[int, float] = {}
        self.recording: set[int] = set()  # in-flight tasks whose outcome write has begun
        self.contexts: dict[int, TaskContext] = {}  # running tasks, for cancellation
        self.cancelled: set[int] = set()
        # tasks that ran but whose outcome write never landed (an outage longer than a lease):
        # rescue re-runs them with the attempt counted, so they are no orphans to release
        self.unrecorded: set[int] = set()
        self.finished = 0
        #: moving average of a task's time on a handler thread (seconds); None until one ends
        self.pace: float | None = None
        #: the same for async tasks on the event loop (`async_runner`), whose pace is their own
        self.async_pace: float | None = None
        self.warmed: set[str] = set()  # the runners ("threads", "async") whose first task has ended

    def add(self, tasks: list[TaskRecord], sent: float) -> None:
        """Tasks a lease statement sent at ``sent`` (monotonic) returned."""
        with self.lock:
            for task in tasks:
                self.inflight[task.id] = task
                self.held_until[task.id] = sent + self.lease_timeout

    def count(self) -> int:
        """Tasks leased and not finished (one whose outcome is being written holds no thread)."""
        return len(self.inflight) - len(self.recording)

    def ids(self) -> list[int]:
        with self.lock:
            return list(self.inflight)

    def known(self) -> set[int]:
        """Tasks this worker knows it leased: held, or run but never recorded."""
        with self.lock:
            return set(self.inflight) | self.unrecorded

    def lasts(self, task: TaskRecord) -> float | None:
        """Until when (monotonic) this lease of ``task`` surely lasts; None if a newer lease of
        the task replaced it or it was settled."""
        with self.lock:
            if self.inflight.get(task.id) is not task:
                return None
            return self.held_until.get(task.id, 0.0)

    def renewed(self, ids: list[int], held_until: float) -> None:
        """A heartbeat renewed ``ids`` until at least ``held_until`` (monotonic); a lease taken
        while it was on its way may already last longer, and keeps that."""
        with self.lock:
            for task_id in ids:
                if task_id in self.held_until:
                    self.held_until[task_id] = max(self.held_until[task_id], held_until)

    def recording_begins(self, task_id: int) -> None:
        """From now on a heartbeat may miss this task without a loss."""
        with self.lock:
            self.recording.add(task_id)

    def ran(self, seconds: float) -> None:
        """A task held a handler this long: update the pace prefetch sizes itself by."""
        self.pace = self._paced(self.pace, seconds, "threads")

    def ran_async(self, seconds: float) -> None:
        """An async task held an async slot this long (see `ran`)."""
        self.async_pace = self._paced(self.async_pace, seconds, "async")

    def _paced(self, pace: float | None, seconds: float, runner: str) -> float | None:
        """The moving average ``pace`` with ``seconds`` added, leaving out the first task each
        runner of the process runs: that one pays the process's one-time costs (the metrics
        client's import on its first event, 45 ms here; often a periodic job that the supervisor
        submitted as it started). An average seeded with it held prefetch near nothing for the
        next ten or so no-op tasks: a lease per task or two at the start of every drain."""
        if runner not in self.warmed:
            self.warmed.add(runner)
            return pace
        return seconds if pace is None else pace + PACE_WEIGHT * (seconds - pace)

    def forget(self, tasks: list[TaskRecord], ran: bool = True) -> None:
        """The outcome of these tasks is settled, or they were given back unrun (``ran`` False,
        not counted towards ``--max-tasks-per-worker``): they no longer hold this worker's leases."""
        with self.lock:
            for task in tasks:
                if self.inflight.get(task.id) is task:  # not a newer lease of the same task (see `lease`)
                    del self.inflight[task.id]
                    self.held_until.pop(task.id, None)
                self.recording.discard(task.id)
                self.cancelled.discard(task.id)
            if ran:
                self.finished += len(tasks)

    def take_all(self) -> list[int]:
        """At shutdown: every lease still held, forgotten here (the caller releases them)."""
        with self.lock:
            leftover = list(self.inflight)
            self.inflight.clear()
        return leftover


class Room:
    """What each room of a worker process (leasing, runner, completer, heartbeat) works with:
    the settings, the store, the channel shared with the supervisor and the book of leases."""

    def __init__(self, settings: Settings, store: TaskStore, channel: WorkerChannel, book: HeldLeases) -> None:
        self.settings = settings
        self.store = store
        self.channel = channel
        self.owner = channel.owner
        self.book = book
