"""Runs the supervisor's background loops, one thread each, and never loses one silently.

A loop lost without a word is how issue 14 began: leases expired and stayed ``running`` for
minutes while the supervisor looked alive. So each loop is a `Service` whose `Service.step` is
one iteration; the runner calls it again and again on a thread of its own. An exception that
leaves `step` kills that loop only: the runner logs it with its traceback, counts it
(``on_restart``, the ``gta_service_restarts_total`` metric) and starts the loop again after a
backoff (1 s, doubling to 30 s; reset once a loop has lived 30 s). `ServiceRunner.health`
says, for ``/healthz``, which loops are not running and which are stuck: an iteration running
for longer than ``stuck_after`` (a thread cannot be stopped from outside; it is reported, and
the iteration's own timeouts are what end it).

`ServiceRunner.watch` does the restarting; the supervisor's main loop, which never waits on
the database, calls it on every pass.
"""
from __future__ import annotations

import abc
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

log = logging.getLogger("gta.services")

FIRST_RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0
STABLE_AFTER = 30.0  # a loop that lived this long restarts after the first delay again


class Service(abc.ABC):
    """One background loop of the supervisor."""

    #: the loop's name: its thread is ``gta-<name>``, its metric label and ``/healthz`` key
    name: ClassVar[str]

    @abc.abstractmethod
    def step(self, done: threading.Event) -> None:
        """One iteration: do what is due, then wait (on ``done``, so that a stop cuts the wait
        short) until the next one is. Expected failures (the database is down) are handled
        here; anything that escapes kills the loop, and the runner restarts it."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the loop's thread holds (its database connection); called on that
        thread when the loop ends, by a stop or by a death."""


class Outage:
    """Whether one of the supervisor's statements failed after it began to stop (a signal, or
    ``done`` for a supervisor stopped otherwise).

    From then on its exit sends nothing more that would wait: against a database that stopped
    answering, each statement waits out its timeout, and on MariaDB a reconnect or two more
    (tests/chaos' half-open test: the janitor's release, the roster row's removal and the
    second dead worker's release took 7-18 s each, one after another, for a 27 s exit). What is
    not sent expires: dead workers' leases are rescued, the roster row lapses. A failure during
    the wait for running tasks counts too: counting only those after ``done`` left the exit to
    the luck of whether a statement happened to fail in the second or so between the two.
    """

    def __init__(self, done: threading.Event) -> None:
        self.done = done
        self.stopping = threading.Event()  # set by the supervisor's main loop as it begins to stop
        self.seen = False

    def failed(self) -> None:
        """A statement failed: an outage, if the supervisor is stopping."""
        if self.stopping.is_set() or self.done.is_set():
            self.seen = True


@dataclasses.dataclass
class _Loop:
    service: Service
    thread: threading.Thread | None = None
    started_at: float = 0.0
    step_started: float | None = None  # monotonic, while an iteration runs
    error: str | None = None  # the exception that last killed the loop
    deaths: int = 0  # in a row, for the backoff
    restart_at: float = 0.0
    restarts: int = 0
    stuck_reported: float | None = None  # the step_started of the iteration last logged as stuck

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


class ServiceRunner:
    def __init__(self, services: Sequence[Service], done: threading.Event, *, stuck_after: float,
                 on_restart: Callable[[str], None] = lambda name: None) -> None:
        self.loops = [_Loop(service) for service in services]
        self.done = done
        self.stuck_after = stuck_after
        self.on_restart = on_restart

    @property
    def names(self) -> list[str]:
        return [loop.service.name for loop in self.loops]

    def start(self) -> None:
        for loop in self.loops:
            self._start(loop)

    def _start(self, loop: _Loop) -> None:
        loop.started_at, loop.restart_at = time.monotonic(), 0.0
        loop.thread = threading.Thread(target=self._run, args=(loop,), name=f"gta-{loop.service.name}", daemon=True)
        loop.thread.start()

    def _run(self, loop: _Loop) -> None:
        service = loop.service
        try:
            while not self.done.is_set():
                loop.step_started = time.monotonic()
                service.step(self.done)
                loop.step_started = None
        except BaseException as exc:
            loop.error = f"{type(exc).__name__}: {exc}"
            lived = time.monotonic() - loop.started_at
            loop.deaths = 1 if lived >= STABLE_AFTER else loop.deaths + 1
            delay = min(MAX_RESTART_DELAY, FIRST_RESTART_DELAY * 2 ** (loop.deaths - 1))
            loop.restart_at = time.monotonic() + delay
            log.error("service %s died (%s); restarting it in %.0fs", service.name, loop.error, delay,
                      exc_info=True)
        finally:
            loop.step_started = None
            try:
                service.close()
            except Exception:
                log.warning("service %s: closing failed", service.name, exc_info=True)

    def watch(self) -> None:
        """Restart every loop that died and whose backoff is over (never while stopping); log a
        loop stuck in an iteration, once per iteration."""
        if self.done.is_set():
            return
        now = time.monotonic()
        for loop in self.loops:
            step_started = loop.step_started
            if step_started is not None and now - step_started > self.stuck_after \
                    and loop.stuck_reported != step_started:
                loop.stuck_reported = step_started
                log.error("service %s is stuck: one iteration has run for %.0fs", loop.service.name,
                          now - step_started)
            if loop.thread is not None and not loop.running and now >= loop.restart_at:
                loop.restarts += 1
                self.on_restart(loop.service.name)
                log.warning("service %s restarted (%d restart(s) so far)", loop.service.name, loop.restarts)
                self._start(loop)

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds in all for the loops to end (``done`` must be set)."""
        deadline = time.monotonic() + timeout
        for loop in self.loops:
            if loop.thread is not None:
                loop.thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def health(self) -> dict[str, dict[str, Any]]:
        """Per loop: ``ok``, ``restarts`` and, when not ok, ``error`` saying why."""
        now = time.monotonic()
        report: dict[str, dict[str, Any]] = {}
        for loop in self.loops:
            entry: dict[str, Any] = {"ok": True, "restarts": loop.restarts}
            step_started = loop.step_started
            if not loop.running:
                entry.update(ok=False, error=f"not running: {loop.error or 'not started'}")
            elif step_started is not None and now - step_started > self.stuck_after:
                entry.update(ok=False, error=f"stuck: one iteration has run for {now - step_started:.0f}s")
            report[loop.service.name] = entry
        return report
