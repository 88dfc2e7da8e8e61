"""A worker process: lease due tasks, run their handlers, record each outcome.

The work is split by job into rooms that share one book of held leases (`worker.held_leases.HeldLeases`):
- leasing (`worker.leasing.Leaser`, the main thread) leases tasks into a queue, with prefetch, and
  hands back leases that must not run here;
- the runner (`worker.thread_runner.ThreadRunner`, ``threads`` handler threads) runs them and asks the
  outcome rule (`outcomes.decide`) what each ending means; async handlers' tasks go to the
  async runner (`worker.async_runner.AsyncRunner`, an event loop on its thread, up to
  ``concurrency`` at once) instead, when the supervisor gave this worker async slots;
- completion (`worker.completer.Completer`, its own thread for batched successes) writes outcomes,
  fenced on the lease;
- the heartbeat (`worker.heartbeat.Heartbeat`, its own thread) renews leases, delivers cancels and
  stops the worker when its supervisor is gone.
What the supervisor and a worker share lives in `worker.channel`.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import multiprocess
from multiprocess import forkserver

from .. import runtime as runtime_module
from ..config import Settings
from ..db import drivers
from ..plugins import call_hook_safely
from ..runtime import Runtime
from ..tasks import TaskRecord
from .async_runner import AsyncRunner
from .channel import EXIT_BOOT_FAILED, EXIT_RECYCLED, EXIT_THREAD_DIED, FORK_SERVER_ENV, WorkerChannel
from .completer import Completer
from .heartbeat import Heartbeat
from .held_leases import HeldLeases
from .leasing import Leaser
from .thread_runner import ThreadRunner

log = logging.getLogger("gta.worker")

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
#: what ``ps`` and ``/proc/PID/comm`` call a worker process
PROCESS_NAME = b"gta-worker"


def worker_main(settings: Settings, channel: WorkerChannel, environment: dict[str, str]) -> None:
    """Entry point of a worker process, forked by the supervisor's fork server
    (`gta_core.supervisor.launcher`); ``environment`` is the supervisor's when it asked for it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the supervisor decides
    signal.signal(signal.SIGTERM, lambda *_: channel.request_stop())
    _adopt_environment(environment)
    _leave_fork_server()
    _die_with_parent()
    _name_process()
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s [worker {os.getpid()}] %(name)s: %(message)s")
    try:
        runtime = runtime_module.configure(settings)
        runtime.plugins  # noqa: B018 - load plugins now, so a broken one fails the boot
    except Exception:
        log.exception("worker failed to boot")
        os._exit(EXIT_BOOT_FAILED)
    channel.booted.set()
    supervisor = multiprocess.parent_process()
    assert supervisor is not None, "a worker runs in a process the supervisor started"
    code = Worker(runtime, channel, supervisor.is_alive).run()
    call_hook_safely(runtime.plugins, "gta_worker_stopped")  # os._exit runs no atexit handler
    logging.shutdown()
    os._exit(code)


def _adopt_environment(environment: dict[str, str]) -> None:
    """Take the supervisor's environment as this worker's own (the fork server's dates from the
    server's start), less what only told the server how to import (``GTA_DRIVER_DIALECT`` is
    consumed on import: a handler's own subprocesses see every driver again)."""
    os.environ.clear()
    os.environ.update(environment)
    for name in (drivers.ENV, FORK_SERVER_ENV):
        os.environ.pop(name, None)


def _leave_fork_server() -> None:
    """Close the fork server's "alive" pipe, which every process it forks inherits.

    The server exits once every holder of that pipe has closed it; with no worker holding it,
    that is when the supervisor goes, and each worker, whose parent the server is, then gets
    its parent-death signal (`_die_with_parent`) at once instead of at its next heartbeat."""
    server = forkserver._forkserver
    fd, server._forkserver_alive_fd = server._forkserver_alive_fd, None
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM when the fork server, and so the supervisor, is gone (the
    heartbeat thread also watches the supervisor)."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _name_process() -> None:
    """``gta-worker`` in ``ps``, ``top`` and ``/proc/PID/comm``: the command line is the fork server's."""
    _prctl(_PR_SET_NAME, PROCESS_NAME)


def _prctl(option: int, value: Any) -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, value)
    except OSError:  # no glibc: the heartbeat still watches the supervisor
        pass


class Worker:
    """One worker process's rooms, wired together; `run` serves until stopped or recycled."""

    def __init__(self, runtime: Runtime, channel: WorkerChannel, supervisor_alive: Callable[[], bool]) -> None:
        settings, store = runtime.settings, runtime.store
        self.settings = settings
        self.owner = channel.owner
        self.book = HeldLeases(settings.lease_timeout)
        todo: queue.SimpleQueue[TaskRecord | None] = queue.SimpleQueue()
        self.leaser = Leaser(settings, store, channel, self.book, todo, tuple(sorted(runtime.plugins.registry.tasks)))
        self.completer = Completer(settings, store, runtime.plugins, channel, self.book, self.leaser.nudge)
        self.runner = ThreadRunner(runtime, channel, self.book, todo, self.leaser, self.completer)
        self.async_runner: AsyncRunner | None = None
        slots = len(channel.running) - settings.threads  # the supervisor sized them (`async_slots`)
        if slots > 0:
            self.async_runner = AsyncRunner(runtime, channel, self.book, self.leaser, self.completer,
                                            first_slot=settings.threads, slots=slots)
            registry = runtime.plugins.registry

            def is_async(task: TaskRecord) -> bool:
                definition = registry.find(task.key)
                return definition is not None and definition.is_async
            self.leaser.route_async(slots, is_async, self.async_runner.accept)
        self.heartbeat = Heartbeat(settings, store, channel, self.book, supervisor_alive, self._unpark)

    def run(self) -> int:
        threads = self.runner.threads(self._vital)
        if self.async_runner is not None:
            threads.append(threading.Thread(target=self._vital, args=(self.async_runner.loop,), name="gta-async",
                                            daemon=True))
        threads.append(threading.Thread(target=self._vital, args=(self.heartbeat.loop,), name="gta-heartbeat",
                                        daemon=True))
        threads.append(threading.Thread(target=self._vital, args=(self.completer.loop,), name="gta-completer",
                                        daemon=True))
        for thread in threads:
            thread.start()
        log.info("worker %s serving queues %s", self.owner, ",".join(self.settings.queues))
        self.leaser.loop()
        return self._drain_and_release()

    def _unpark(self) -> None:
        """Hand back prefetched tasks waiting behind long-running ones (heartbeat thread)."""
        self.leaser.unpark()
        if self.async_runner is not None:
            self.async_runner.unpark()

    def _vital(self, loop: Callable[..., None], *args: Any) -> None:
        """Run one of the worker's threads; if it dies, the process goes too.

        A worker missing a thread is worse than a dead one: without its completer, successes
        are never written while the heartbeat keeps their leases alive forever; without its
        heartbeat, live tasks are rescued and run twice. Exiting hands everything to the
        supervisor, which settles the leases (`Supervisor._reap`) and starts a new worker.
        """
        try:
            loop(*args)
        except BaseException:
            log.critical("worker thread %s died; exiting so the supervisor replaces this worker",
                         threading.current_thread().name, exc_info=True)
            logging.shutdown()
            os._exit(EXIT_THREAD_DIED)

    def _drain_and_release(self) -> int:
        """Stop: wait up to shutdown_timeout for running handlers, then release the rest."""
        self.runner.stop()
        if self.async_runner is not None:
            self.async_runner.stop()
        deadline = time.monotonic() + self.settings.shutdown_timeout
        while time.monotonic() < deadline and self.runner.running():  # every slot, threads' and async
            time.sleep(0.05)
        self.completer.flush()  # successes must land before the rest is released
        self.leaser.release_all()
        return EXIT_RECYCLED
