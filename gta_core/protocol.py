"""What a supervisor and its worker processes share: the exit codes, and the shared-memory
channel (`WorkerChannel`) through which the supervisor wakes and stops a worker and sees which
task each handler slot runs, so that it can settle a dead worker's leases (`Supervisor._reap`).

Both sides import this module; neither imports the other's internals.
"""
from __future__ import annotations

import dataclasses
from typing import Any

EXIT_BOOT_FAILED = 3
EXIT_RECYCLED = 0
EXIT_CANCEL_FORCED = 4  # the worker killed itself to stop a handler cancelled with force=True
EXIT_THREAD_DIED = 5  # one of the worker's threads died (see `Worker._vital`)


class Doorbell:
    """A cross-process wake-up that neither a dead waiter nor a signal handler can deadlock.

    multiprocessing's Event is a Condition whose ``set()`` blocks until every sleeper has
    acknowledged the wake-up. A worker killed while it waits (SIGKILL, a handler's
    ``os._exit``, the OOM killer) stays counted as a sleeper forever, so the supervisor's next
    ``set()`` hangs for good; and a SIGTERM handler calling ``set()`` while its own main thread
    sleeps in ``wait()`` waits for itself. A bounded semaphore keeps no such bookkeeping:
    `ring` is one ``sem_post`` that never blocks and is safe inside a signal handler.
    """

    def __init__(self, ctx: Any) -> None:
        self._sem = ctx.BoundedSemaphore(1)

    def ring(self) -> None:
        try:
            self._sem.release()
        except ValueError:  # already rung and not yet heard
            pass

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a ring and consume it; True if it rang."""
        return bool(self._sem.acquire(True, max(0.0, timeout)))

    def clear(self) -> None:
        self._sem.acquire(False)


class StopFlag:
    """A one-way flag in shared memory: setting it is a plain store, safe in a signal handler."""

    def __init__(self, ctx: Any) -> None:
        self._value = ctx.RawValue("b", 0)

    def set(self) -> None:
        self._value.value = 1

    def is_set(self) -> bool:
        return bool(self._value.value)


@dataclasses.dataclass
class WorkerChannel:
    """What a supervisor and one worker process share (all picklable multiprocess objects)."""

    owner: str
    wake: Doorbell  # work may be due, or the worker should look at `stop`
    stop: StopFlag  # stop leasing, finish in-flight work, release the rest, exit
    # one slot per handler thread, then (a worker with async handlers) one per async task it may
    # run at once (``concurrency``; see `async_runner`); the supervisor treats them all alike
    running: Any  # Array('q', slots): task id each slot is running, 0 when idle
    started: Any  # Array('d', slots): time.time() each of those tasks started
    deadlines: Any  # Array('d', slots): time.time() by which that task must end (0: no timeout)
    booted: StopFlag  # set once the worker loaded its plugins: a later exit is never a boot failure
    # Array('q', slots + prefetch): tasks whose handler succeeded and whose batched success
    # write has not landed yet, 0 in free places; if the process dies first, the supervisor
    # records those successes (they ran to the end: neither a re-run nor a lost attempt)
    unwritten: Any

    def request_stop(self) -> None:
        """Ask the worker to stop (from the supervisor, or a signal handler in the worker)."""
        self.stop.set()
        self.wake.ring()
