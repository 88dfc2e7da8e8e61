"""A worker's heartbeat room: keep every held lease alive, deliver cancellations, watch the parent.

One thread renews every in-flight lease in one statement each third of the lease timeout,
tells running handlers they were cancelled (ending the process for a forced cancel), hands
back prefetched tasks stuck behind long runs (`Leaser.unpark`), and stops the worker when its
supervisor is gone. Python switches threads every few milliseconds, so a busy pure-Python
handler cannot starve it.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import peewee

from ..config import Settings
from ..errors import GTAError
from ..store.task_store import TaskStore
from .channel import EXIT_CANCEL_FORCED, WorkerChannel
from .held_leases import HeldLeases, Room

log = logging.getLogger("gta.worker")

CANCEL_CHECK_INTERVAL = 1.0


class Heartbeat(Room):
    """The heartbeat thread's loop and the cancellation checks it makes."""

    def __init__(self, settings: Settings, store: TaskStore, channel: WorkerChannel, book: HeldLeases,
                 supervisor_alive: Callable[[], bool], unpark: Callable[[], None]) -> None:
        super().__init__(settings, store, channel, book)
        self.supervisor_alive = supervisor_alive
        self.unpark = unpark

    def loop(self) -> None:
        interval = self.settings.heartbeat_interval
        next_beat = time.monotonic() + interval
        next_cancel_check = time.monotonic() + CANCEL_CHECK_INTERVAL
        orphaned = False
        while True:
            if time.monotonic() >= next_cancel_check:
                next_cancel_check = time.monotonic() + CANCEL_CHECK_INTERVAL
                self.check_cancelled()
            self.unpark()
            if not orphaned and not self.supervisor_alive():
                orphaned = True
                log.warning("the supervisor is gone; stopping")
                self.channel.request_stop()
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + interval
                self.beat()
            time.sleep(min(0.5, interval))

    def beat(self) -> None:
        """Renew every held lease in one statement."""
        ids = self.book.ids()
        if not ids:
            return
        sent = time.monotonic()
        try:
            renewed = self.store.heartbeat(self.owner, ids, self.settings.lease_timeout)
            if renewed == len(ids) or self._check_renewals(ids, renewed):
                self.book.renewed(ids, sent + self.settings.lease_timeout)
        except (GTAError, peewee.DatabaseError, peewee.InterfaceError) as exc:
            log.warning("heartbeat failed: %s", exc)

    def check_cancelled(self) -> None:
        """Tell running handlers they were cancelled; for a forced cancel, stop the process.

        Only asks the database while tasks run, so an idle worker sends nothing.
        """
        book = self.book
        with book.lock:
            running = [task_id for task_id in book.contexts if task_id not in book.cancelled]
        if not running:
            return
        try:
            found = self.store.cancelled_of(self.owner, running)
        except (GTAError, peewee.DatabaseError, peewee.InterfaceError) as exc:
            log.warning("cancel check failed: %s", exc)
            return
        forced = False
        with book.lock:
            for task_id, force in found.items():
                book.cancelled.add(task_id)
                ctx = book.contexts.get(task_id)
                if ctx is not None:
                    ctx.cancel_event.set()
                forced = forced or force
            others = [task_id for task_id in book.inflight if task_id not in found]
        if found:
            log.info("task(s) %s cancelled while running", sorted(found))
        if forced:
            # a thread cannot be killed: give the innocent tasks back, then end the process
            log.warning("forced cancel of %s: releasing %s and exiting", sorted(found), others)
            try:
                self.store.release(self.owner, others, "handed back: its worker exits for the forced cancel "
                                                       "of another task")
            except (GTAError, peewee.DatabaseError, peewee.InterfaceError) as exc:
                log.warning("could not release %s (%s); the supervisor will", others, exc)
            logging.shutdown()
            os._exit(EXIT_CANCEL_FORCED)

    def _check_renewals(self, ids: list[int], renewed: int) -> bool:
        """Warn about leases taken over, not about tasks that merely finished meanwhile;
        whether every lease still held was renewed.

        A handler that records its outcome between our snapshot and the heartbeat leaves a
        row the heartbeat rightly skips, and so does a task cancelled while it runs (its row
        is ``cancelled`` now, while its handler winds down). Only the other tasks whose outcome
        write had not begun even now were certainly still running when the heartbeat ran;
        fewer renewals than those means some lease was lost (the fenced outcome write will
        also say so).
        """
        self.check_cancelled()  # a cancel since the last check explains a skipped row too
        book = self.book
        with book.lock:
            unsettled = [task_id for task_id in ids if task_id in book.inflight and task_id not in book.recording
                         and task_id not in book.cancelled]
        if renewed < len(unsettled):
            log.warning("heartbeat renewed %d of %d leases; the others were taken over", renewed, len(unsettled))
            return False
        return True
