"""A worker's completion room: write each attempt's outcome, fenced on its lease.

Plain successes are batched by the completer thread (group commit: whatever finished while the
previous write was in flight goes in the next one, with no added delay); every other outcome —
a success with children or clean-up, a retry, a failure, as `outcomes.decide` ruled — is written
at once by the thread that ran the task. Every write rides out a database outage for up to a
lease period; one that never lands leaves the lease to expire and rescue to re-run the task.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import peewee

from ..config import Settings
from ..errors import DatabaseUnavailable
from ..outcomes import Action, Outcome, one_line
from ..plugins import Plugins, report_task_events
from ..store.inserts import NewTask
from ..store.task_store import TaskStore
from ..tasks import TaskRecord
from .channel import WorkerChannel
from .held_leases import HeldLeases, Room

log = logging.getLogger("gta.worker")
T = TypeVar("T")


class Completer(Room):
    """Records outcomes for the runner: `defer_success` (batched), `succeed`, `settle`.

    A deferred success keeps its lease (and heartbeats) until its batched write lands, and
    its id sits in the channel's ``unwritten`` array meanwhile, so that the supervisor records
    it if this process dies first: it ran to the end and must not run again.
    """

    def __init__(self, settings: Settings, store: TaskStore, plugins: Plugins, channel: WorkerChannel,
                 book: HeldLeases, nudge: Callable[[], None]) -> None:
        super().__init__(settings, store, channel, book)
        self.plugins = plugins
        self.nudge = nudge
        self.completed: list[tuple[TaskRecord, float, int]] = []  # (task, duration, place in unwritten)
        self.completed_ready = threading.Condition(book.lock)
        self.unwritten_free = list(range(len(channel.unwritten)))  # free places in channel.unwritten
        self.flush_lock = threading.Lock()

    # -- what the runner calls -------------------------------------------------------------
    def defer_success(self, task: TaskRecord, duration: float) -> bool:
        """Hand a plain success to the completer thread; False (write it now) if no place is free."""
        with self.completed_ready:
            if not self.unwritten_free:  # never with leases bounded as now
                return False
            place = self.unwritten_free.pop()
            # published before the handler clears its `running` place: a crash from now on
            # finds the task in one of the two
            self.channel.unwritten[place] = task.id
            self.book.recording.add(task.id)
            self.completed.append((task, duration, place))
            self.completed_ready.notify()
            return True

    def succeed(self, task: TaskRecord, children: Sequence[NewTask], delete: bool, duration: float, *,
                result: str | None = None, workflows: Sequence[Any] = ()) -> None:
        """Write a success now: with its result, the children, groups and chains it created,
        counted in its own group, or deleting its row."""
        if self._record(task, lambda: self.store.complete(self.owner, task.id, children, delete,
                                                          attempt=task.attempts, result=result,
                                                          group_id=task.group_id, workflows=workflows)):
            self.event("succeeded", task, duration=duration)

    def settle(self, task: TaskRecord, outcome: Outcome, duration: float) -> None:
        """Write a failed attempt's outcome (retry or fail, from `outcomes.decide`)."""
        error = outcome.error
        assert error is not None
        if outcome.action is Action.RETRY:
            delay = outcome.delay or 0.0
            if self._record(task, lambda: self.store.retry(self.owner, task.id, delay, outcome.error_text,
                                                           attempt=task.attempts, entry=outcome.entry())):
                task_logger(task.key).info("task %d attempt %d/%d failed (%s); retry in %.1fs", task.id,
                                           task.attempts, task.max_attempts, one_line(error), delay)
                self.event("retried", task, error, duration)
        elif self._record(task, lambda: self.store.fail(self.owner, task.id, outcome.error_text,
                                                        attempt=task.attempts, group_id=task.group_id,
                                                        entry=outcome.entry())):
            task_logger(task.key).warning(
                "task %d failed for good after %d attempt(s): %s", task.id, task.attempts, one_line(error))
            self.event("failed", task, error, duration)

    def event(self, event: str, task: TaskRecord, error: BaseException | None = None,
              duration: float | None = None) -> None:
        report_task_events(self.plugins, event, [task], [error], [duration])

    # -- completer thread ------------------------------------------------------------------
    def loop(self) -> None:
        """Record plain successes in batches. A crash before a write lands re-runs those tasks;
        it never loses them."""
        while True:
            with self.completed_ready:
                while not self.completed:
                    self.completed_ready.wait()
            self.flush()

    def flush(self) -> None:
        """Write the deferred successes now (also at shutdown, before the rest is released)."""
        with self.flush_lock:
            with self.book.lock:
                batch, self.completed = self.completed, []
            if not batch:
                return
            ids = [task.id for task, _, _ in batch]
            attempts = [task.attempts for task, _, _ in batch]
            accepted = self._through_outage(lambda: self.store.complete_many(self.owner, ids, attempts),
                                            f"tasks {ids}")
            with self.book.lock:
                for _, _, place in batch:
                    self.channel.unwritten[place] = 0
                    self.unwritten_free.append(place)
            if accepted is None:  # never landed (logged once); their leases expire and rescue re-runs them
                with self.book.lock:
                    self.book.unrecorded.update(ids)
            else:
                succeeded = [(task, duration) for task, duration, _ in batch if task.id in accepted]
                report_task_events(self.plugins, "succeeded", [task for task, _ in succeeded],
                                   durations=[duration for _, duration in succeeded])
                for task, _, _ in batch:
                    if task.id not in accepted:
                        self._rejected(task)
            self.book.forget([task for task, _, _ in batch])
            self.nudge()

    # -- writing ---------------------------------------------------------------------------
    def _record(self, task: TaskRecord, write: Callable[[], bool]) -> bool:
        """Run a fenced outcome write; True when it landed, False when the lease was lost
        (logged, counted) or the database stayed unreachable for a lease period."""
        self.book.recording_begins(task.id)
        accepted = self._through_outage(write, f"task {task.id}")
        if accepted is False:
            self._rejected(task)
        elif accepted is None:
            with self.book.lock:
                self.book.unrecorded.add(task.id)
        return bool(accepted)

    def _through_outage(self, write: Callable[[], T], what: str) -> T | None:
        """Run an outcome write, riding out a database outage for up to one lease period;
        None (logged) if it never landed: the lease then expires and the task is re-run."""
        deadline = time.monotonic() + self.settings.lease_timeout
        pause = 0.1
        while True:
            try:
                return write()
            except (DatabaseUnavailable, peewee.DatabaseError, peewee.InterfaceError) as exc:
                if time.monotonic() + pause > deadline:
                    log.error("could not record the outcome of %s (%s); rescue will re-run it", what, exc)
                    return None
                time.sleep(pause)
                pause = min(pause * 2, 2.0)

    def _rejected(self, task: TaskRecord) -> None:
        """The fence refused this task's outcome: cancelled meanwhile, or its lease was taken over."""
        if task.id in self.book.cancelled:
            log.info("task %d was cancelled while it ran; its outcome was not recorded", task.id)
            self.event("cancelled", task)
            return
        log.warning("lease on task %d was lost before its outcome was recorded; the write was rejected", task.id)
        self.event("lost", task)


@functools.lru_cache(maxsize=1024)
def task_logger(key: str) -> logging.Logger:
    """The ``gta.task.<key>`` logger (getLogger takes a global lock: once per key, not per task)."""
    return logging.getLogger(f"gta.task.{key}")
