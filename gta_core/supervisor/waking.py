"""Which workers a wake-up rings: one idle worker per wake-up, and every idle worker when a
lease came back full.

Ringing every worker for each submit woke N lease loops for one task: N lease statements of
which N-1 found nothing, a herd that grows with workers × hosts; on SQLite the losers also
queued behind the winner's write lock, which made the tail of the submit-to-start latency
(traced: a lease of one row waiting 3-7 ms for the lock in 1 % of wake-ups; `benchmarks/latency.py`).

A burst still reaches every worker: a worker whose lease came back full rings the relay
(`WorkerChannel.relay`), and the supervisor rings every idle worker, one hop later. Every one,
not the next: the worker that rang may still look idle (its leased task not yet started), and
ringing it again instead of the next left that task waiting for a poll.

A ring is only a hint, but one that reaches no lease loop would leave a lone task waiting for
the next poll (up to ``scan_interval``): a worker may look idle and yet not lease (backing off
from a failed lease, about to recycle). A ring still unheard after `UNHEARD_AFTER` is passed
on to every worker, as before this module existed (`Waker.check`, from the main loop).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from ..worker.channel import Doorbell, WorkerChannel

#: seconds after which a ring its worker has not heard is passed on to every worker; an idle
#: lease loop hears its ring within a millisecond, a loaded host's within a few
UNHEARD_AFTER = 0.05


class Waker:
    """Rings workers' doorbells for the supervisor's threads (listener, scheduler, main loop)."""

    def __init__(self, channels: Callable[[], Sequence[WorkerChannel | None]]) -> None:
        """``channels``: the channel of each worker slot's live process (None: no process)."""
        self.channels = channels
        self.unheard: dict[Doorbell, float] = {}  # rings not known to be heard, and their deadline
        self.lock = threading.Lock()

    def ring_idle(self) -> None:
        """Ring the first idle worker (booted, not stopping, a handler slot free) with no ring
        pending; none if there is no such worker (a busy one leases as its slots free up,
        `Leaser.nudge`; one rung already will lease).

        The first in slot order, not the next in turn: a worker that ran a task a moment ago
        answers faster than one that has slept longer (`latency.py` on SQLite: p50 0.68-0.80 ms
        against 0.75-0.90 taking turns), and while it leases (its ring still pending) the next
        wake-up rings the next worker, so a stream of submits still spreads.
        """
        self._ring_idle(first_only=True)

    def ring_every_idle(self) -> None:
        """Ring every idle worker with no ring pending (a lease came back full: more may be due)."""
        self._ring_idle(first_only=False)

    def _ring_idle(self, first_only: bool) -> None:
        with self.lock:
            for channel in self.channels():
                if channel is not None and _idle(channel) and not channel.wake.pending():
                    channel.wake.ring()
                    self.unheard[channel.wake] = time.monotonic() + UNHEARD_AFTER
                    if first_only:
                        return

    def ring_all(self) -> None:
        """Ring every worker (never blocks, whatever state the workers are in)."""
        for channel in self.channels():
            if channel is not None:
                channel.wake.ring()

    def check(self) -> float:
        """Pass on rings unheard past their deadline to every worker; seconds until the next
        deadline (the main loop waits no longer than that)."""
        with self.lock:
            now = time.monotonic()
            overdue = [bell for bell, deadline in self.unheard.items() if deadline <= now and bell.pending()]
            self.unheard = {bell: deadline for bell, deadline in self.unheard.items() if deadline > now}
            next_check = min(self.unheard.values(), default=now + 3600.0) - now
        if overdue:
            self.ring_all()
        return next_check


def _idle(channel: WorkerChannel) -> bool:
    """Booted, not asked to stop, and at least one handler slot free."""
    return channel.booted.is_set() and not channel.stop.is_set() and 0 in channel.running[:]
