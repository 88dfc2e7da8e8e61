"""What a supervisor and its worker processes share: the exit codes, and the shared-memory
channel (`WorkerChannel`) through which the supervisor wakes and stops a worker and sees which
task each handler slot runs, so that it can settle a dead worker's leases (`Supervisor._reap`).

Both sides import this module; neither imports the other's internals.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import select
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import Settings

EXIT_BOOT_FAILED = 3
EXIT_RECYCLED = 0
EXIT_CANCEL_FORCED = 4  # the worker killed itself to stop a handler cancelled with force=True
EXIT_THREAD_DIED = 5  # one of the worker's threads died (see `Worker._vital`)
#: set (to "1") in the environment the supervisor starts its fork server with (`gta_core.worker.preload`)
FORK_SERVER_ENV = "GTA_FORK_SERVER"


#: bytes `Doorbell.clear` reads at a time: a small object, which Python's allocator serves from
#: its pools where a large one needs malloc (a worker out of memory still clears its doorbell)
READ_SIZE = 256


def async_slots(settings: Settings, registry: Any) -> int:
    """How many async slots a worker gets: ``concurrency`` if any handler is ``async def``, else none
    (the supervisor sizes the channel with it; the worker reads its size back)."""
    return settings.concurrency if any(definition.is_async for definition in registry.tasks.values()) else 0


class Doorbell:
    """A cross-process wake-up that neither a dead waiter, a signal handler nor the wall clock
    can wedge: a pipe the supervisor (or the worker's own threads) writes a byte to, and the
    worker's lease loop waits on.

    multiprocessing's Event is a Condition whose ``set()`` blocks until every sleeper has
    acknowledged the wake-up: a worker killed while it waits stays counted as a sleeper
    forever, so the next ``set()`` hangs for good. A semaphore's timed ``acquire`` has no such
    bookkeeping, but it waits until a deadline on the wall clock (``sem_timedwait``): with the
    wall clock stepped back a wait lasts as much longer, and with it shifted (a host whose
    clock is skewed on purpose) every wait returned at once and idle workers spun. Here `ring`
    is one non-blocking ``write`` (safe in a signal handler; a full pipe is already rung), and
    `wait` is ``poll`` with a relative timeout, which the kernel measures on the monotonic clock.

    Picklable for a spawned worker: the pipe's descriptors are passed to the child.
    """

    def __init__(self, ctx: Any = None) -> None:  # ``ctx`` kept for the callers' symmetry with `StopFlag`
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poller = self._poll_read_end()

    def _poll_read_end(self) -> Any:
        # made once: `wait` and `clear` allocate no more than a few small objects, so a worker
        # whose memory a handler exhausted (tests/chaos: RLIMIT_AS) keeps its lease loop alive
        poller = select.poll()
        poller.register(self._read, select.POLLIN)
        return poller

    def ring(self) -> None:
        try:
            os.write(self._write, b"\0")
        except (BlockingIOError, OSError):  # full: rung many times and not yet heard
            pass

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds (monotonic) for a ring and consume it; True if it rang."""
        if not self._poller.poll(max(0.0, timeout) * 1000):  # retried after a signal, on the time left
            return False
        self.clear()
        return True

    def pending(self) -> bool:
        """Whether it rang and no one has heard it yet (the supervisor holds the read end too)."""
        return bool(self._poller.poll(0))

    def fileno(self) -> int:
        """The read end, to ``select`` on."""
        return self._read

    def clear(self) -> None:
        """Forget any ring not heard yet."""
        try:
            while os.read(self._read, READ_SIZE):
                pass
        except (BlockingIOError, OSError):
            pass

    def __getstate__(self) -> dict[str, Any]:
        from multiprocess.reduction import DupFd  # only while spawning a worker

        return {"read": DupFd(self._read), "write": DupFd(self._write)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._read, self._write = state["read"].detach(), state["write"].detach()
        self._poller = self._poll_read_end()

    def __del__(self) -> None:  # a replaced worker's doorbell must not leak its descriptors
        for fd in (getattr(self, "_read", None), getattr(self, "_write", None)):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)


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
    #: the supervisor's, shared by its workers: a lease came back full, more may be due; the
    #: supervisor rings every idle worker (`gta_core.supervisor.waking`)
    relay: Doorbell
    stop: StopFlag  # stop leasing, finish in-flight work, release the rest, exit
    # one slot per handler thread, then (a worker with async handlers) one per async task it may
    # run at once (``concurrency``; see `async_runner`); the supervisor treats them all alike
    running: Any  # Array('q', slots): task id each slot is running, 0 when idle
    # the clock of both is time.monotonic(), one for every process of the host: a wall clock
    # stepped forward would kill tasks long before their timeout, one stepped back never
    started: Any  # Array('d', slots): time.monotonic() each of those tasks started
    deadlines: Any  # Array('d', slots): time.monotonic() by which that task must end (0: no timeout)
    booted: StopFlag  # set once the worker loaded its plugins: a later exit is never a boot failure
    # Array('q', slots + prefetch): tasks whose handler succeeded and whose batched success
    # write has not landed yet, 0 in free places; if the process dies first, the supervisor
    # records those successes (they ran to the end: neither a re-run nor a lost attempt)
    unwritten: Any

    def publish(self, slot: int, task_id: int, started: float, deadline: float) -> None:
        """Show the supervisor that ``slot`` runs ``task_id`` since ``started`` until ``deadline``
        (0.0: no timeout), all on time.monotonic(). The deadline is written before the id, and
        `clear` takes the id away before the deadline, so the supervisor, reading without a lock,
        never pairs a task with another task's deadline."""
        self.deadlines[slot] = deadline
        self.started[slot] = started
        self.running[slot] = task_id

    def clear(self, slot: int) -> None:
        """``slot`` runs nothing any more (see `publish` for the order)."""
        self.running[slot] = 0
        self.deadlines[slot] = 0.0

    def request_stop(self) -> None:
        """Ask the worker to stop (from the supervisor, or a signal handler in the worker)."""
        self.stop.set()
        self.wake.ring()
