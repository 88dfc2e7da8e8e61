"""A worker's async running room: ``async def`` handlers on one event loop, beside the threads.

A worker whose registry has async handlers runs this room on a thread of its own
(``gta-async``). Leasing hands it the async tasks it leased (`accept`); it keeps up to
``concurrency`` of them in flight, each in one of the channel's async slots (see below), and
like the thread runner it asks `outcomes.decide` what each ending means and hands that to the
`Completer`. A plain success costs the loop nothing but a list append (the completer thread
writes it, batched); the rarer writes that must land at once (a retry, a failure, a success
with children) run on a small pool of writer threads, so the loop never waits on the database.

How each guarantee of the sync path holds here:

- *Dead worker.* Each running coroutine publishes its task in an async slot of the shared
  `worker.channel.WorkerChannel` (the slots after the ``threads`` handler slots): the supervisor
  counts an attempt for exactly those, and releases the tasks that only waited.
- *Heartbeats* run on their own thread: a coroutine that blocks the loop (a synchronous call)
  does not stop them, and Python's thread switching lets them run beside a busy loop.
- *Hard timeout.* At its ``timeout`` the handler's coroutine is cancelled and the attempt ends
  with `TaskTimeout`. The slot publishes the deadline plus `CANCEL_GRACE`, so a coroutine that
  ignores the cancellation, or blocks the loop, is killed with its worker by the supervisor,
  like an overrunning thread.
- *Cancel.* The heartbeat thread sets ``ctx.cancelled`` for a cancelled task; for an async
  task that also cancels its coroutine (`CancelEvent`), which sees `asyncio.CancelledError`.
- *Shutdown.* `stop` starts nothing more; the worker waits for the slots to empty, as for
  threads, and releases what never started.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import functools
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from ..errors import TaskTimeout
from ..outcomes import SUCCEED, decide
from ..plugins import call_hook_safely, report_task_events
from ..results import encode_result
from ..runtime import Runtime
from ..scopes import Attempt, scope
from ..tasks import LazyEvent, TaskContext, TaskRecord
from .channel import EXIT_THREAD_DIED, WorkerChannel
from .completer import Completer, task_logger
from .execute import Spawned, checked_call, plain_success
from .held_leases import HeldLeases, Room
from .leasing import UNPARK_AFTER, Leaser

log = logging.getLogger("gta.worker")

#: seconds the supervisor waits past an async task's timeout, for its cancelled coroutine to
#: end, before it kills the worker (the coroutine ignored the cancellation or blocks the loop)
CANCEL_GRACE = 2.0
WRITER_THREADS = 4  # threads writing the outcomes that cannot be batched (retries, failures, children)


class HandlerWindow:
    """The time a handler runs inside its attempt's asyncio task, and the only time a timeout or
    a cancel may cancel that task.

    The handler is awaited in its attempt's own task, not in a task of its own: one task per
    attempt, and one turn of the loop fewer between a slot freeing and its next handler
    running (with a task of its own, a wave of tasks ending together first resumed every
    attempt, then started every successor, each turn as long as the whole wave). Cancelling
    the attempt's task once the handler has returned would cancel the outcome's write instead,
    hence the window.
    """

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.open = True
        self.expired = False  # the timeout cancelled it
        self.requested = False  # `cancel` asked the task to cancel

    def expire(self) -> None:
        """The handler's timeout: cancel it if it still runs."""
        if self.open:
            self.expired = True
            self.cancel()

    def cancel(self) -> None:
        if self.open and not self.requested:
            self.requested = True
            self.task.cancel()

    def close(self) -> None:
        """The handler returned or raised: nothing cancels the attempt's task from now on. A
        cancellation it caught is taken back (``uncancel``, Python 3.11+), so that what the task
        awaits afterwards (``asyncio.timeout`` in a plugin's scope) is not cut short."""
        self.open = False
        uncancel = getattr(self.task, "uncancel", None)
        if self.requested and uncancel is not None:
            uncancel()


class CancelEvent(LazyEvent):
    """``ctx.cancel_event`` of an async task: setting it (the heartbeat thread does, for a task
    cancelled while it runs) also cancels the handler, through its `HandlerWindow`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.window: HandlerWindow | None = None

    def set(self) -> None:
        super().set()
        if self.window is not None:
            try:
                self.loop.call_soon_threadsafe(self.window.cancel)
            except RuntimeError:  # the loop is closed: the process is ending
                pass

    def aim(self, window: HandlerWindow) -> None:
        """Cancel the handler of ``window`` when set (one set already is checked before the
        handler starts: cancelling the running task would land after the handler, if it never awaits)."""
        self.window = window


class AsyncRunner(Room):
    """Runs async tasks on an event loop (`loop`, on the worker's ``gta-async`` thread), at most
    one per async slot of the channel: slots ``first_slot`` to ``first_slot + slots - 1``."""

    def __init__(self, runtime: Runtime, channel: WorkerChannel, book: HeldLeases, leaser: Leaser,
                 completer: Completer, first_slot: int, slots: int) -> None:
        super().__init__(runtime.settings, runtime.store, channel, book)
        self.runtime = runtime
        self.plugins = runtime.plugins
        self.leaser = leaser
        self.completer = completer
        self.first_slot, self.slots = first_slot, slots
        self.free = list(range(first_slot + slots - 1, first_slot - 1, -1))  # slot numbers, lowest last
        self.waiting: collections.deque[TaskRecord] = collections.deque()  # leased, not started
        self.starting: list[TaskRecord] = []  # started, not yet reported (`_report_started`)
        self.nudge_due = False  # `_nudge` is scheduled
        self.stopping = False
        self.aloop: asyncio.AbstractEventLoop | None = None
        self.wakeup: asyncio.Event | None = None
        self.in_flight: set[asyncio.Task[None]] = set()  # strong references: the loop keeps weak ones
        self.fresh_context = contextvars.Context()  # the loop's own, taken when it starts (`_start`)
        self.writers = concurrent.futures.ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="gta-async-writer")

    # -- what other threads call -------------------------------------------------------------
    def accept(self, tasks: list[TaskRecord]) -> None:
        """Leasing hands over async tasks it leased (from the worker's main thread)."""
        self.waiting.extend(tasks)
        self._wake()

    def stop(self) -> None:
        """Start no more tasks; the running ones finish (the worker waits for the slots)."""
        self.stopping = True
        self._wake()

    def unpark(self) -> None:
        """Hand back tasks waiting behind long-running coroutines (see `Leaser.unpark`)."""
        if not self.waiting or not self.leaser.slots_busy_for(UNPARK_AFTER, self.first_slot, self.slots):
            return
        waiting: list[TaskRecord] = []
        while True:
            try:
                waiting.append(self.waiting.popleft())
            except IndexError:
                break
        mine = [task for task in waiting if self.book.lasts(task) is not None]
        if mine:
            log.info("gave back %d of %d waiting async task(s) behind long-running ones",
                     self.leaser.give_back(mine, "handed back unrun: it waited behind long-running coroutines"),
                     len(mine))

    def _wake(self) -> None:
        loop, wakeup = self.aloop, self.wakeup
        if loop is not None and wakeup is not None:
            try:
                loop.call_soon_threadsafe(wakeup.set)
            except RuntimeError:  # the loop is closed: the process is ending
                pass

    # -- the loop thread ---------------------------------------------------------------------
    def loop(self) -> None:
        """The ``gta-async`` thread: serve until the process ends."""
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self.wakeup = asyncio.Event()
        self.fresh_context = contextvars.copy_context()
        self.aloop = asyncio.get_running_loop()  # from now on `_wake` reaches us; then look
        while True:
            while self.free:
                task = self._next()
                if task is None:
                    break
                self._start(task, self.free.pop())
            await self.wakeup.wait()
            self.wakeup.clear()

    def _next(self) -> TaskRecord | None:
        """The next waiting task to start, None if none waits (or the worker stops); one whose
        lease may have lapsed meanwhile is given back instead (`Leaser.lapsed`)."""
        while self.waiting and not self.stopping:
            task = self.waiting.popleft()
            if not self.leaser.lapsed(task):
                if not self.starting:  # one hook call for the tasks starting in this turn of the loop
                    assert self.aloop is not None
                    self.aloop.call_soon(self._report_started)
                self.starting.append(task)
                return task
        return None

    def _report_started(self) -> None:
        """Report the tasks started since the last call in one hook call (the metrics plugin
        writes each counter once); it runs before any of their handlers does."""
        started, self.starting = self.starting, []
        report_task_events(self.plugins, "started", started)

    def _start(self, task: TaskRecord, slot: int) -> None:
        """Run ``task`` in ``slot``, as an asyncio task of its own whose context variables start
        from the loop's (never from the attempt that ran in the slot before: a request id it
        restored must not leak into the next)."""
        assert self.aloop is not None
        runner = self.fresh_context.run(self.aloop.create_task, self._attempt(task, slot))
        self.in_flight.add(runner)
        runner.add_done_callback(self.in_flight.discard)

    def _nudge(self) -> None:
        """Tell leasing that slots freed: once per turn of the loop, after the turn's tasks
        ended and their successors started. The ring hands the GIL to the lease loop's thread;
        rung per task, mid-turn, it held up the tasks still to start in that turn."""
        self.nudge_due = False
        self.leaser.nudge()

    async def _attempt(self, task: TaskRecord, slot: int) -> None:
        """One task in one slot, published in the channel while it runs (as `ThreadRunner.loop`);
        then the slot goes at once to the next waiting task, if any, in the same turn of the loop."""
        channel = self.channel
        try:
            started = time.monotonic()
            definition = self.plugins.registry.find(task.key)
            timeout = definition.timeout if definition is not None else None
            channel.publish(slot, task.id, started, started + timeout + CANCEL_GRACE if timeout else 0.0)
            began = time.perf_counter()
            attempt = Attempt(task, self.owner)
            with scope(self.plugins, "gta_attempt", attempt=attempt):  # current while the handler runs
                deferred = await self._execute(task, timeout, attempt)
            channel.clear(slot)
            if not deferred:
                self.book.forget([task])
            self.book.ran_async(time.perf_counter() - began)
            successor = self._next()
            if successor is None:
                self.free.append(slot)
            else:
                self._start(successor, slot)
            if not self.nudge_due:
                assert self.aloop is not None
                self.nudge_due = True
                self.aloop.call_soon(self._nudge)
        except BaseException:
            # as a dying handler thread does (`Worker._vital`): the task stays published as
            # running, so its attempt counts, and the supervisor replaces this worker
            log.critical("async runner failed on task %d; exiting so the supervisor replaces this worker",
                         task.id, exc_info=True)
            logging.shutdown()
            os._exit(EXIT_THREAD_DIED)

    async def _execute(self, task: TaskRecord, timeout: float | None, attempt: Attempt) -> bool:
        """Run one task and hand its outcome to the completer (telling ``attempt`` which); True
        when a plain success was deferred to the completer thread (which forgets the task once
        written)."""
        logger = logging.LoggerAdapter(task_logger(task.key), {"task_id": task.id, "attempt": task.attempts})
        start = time.perf_counter()
        ctx: TaskContext | None = None
        result = None
        try:
            definition, args = checked_call(self.settings, self.plugins.registry, task)
            assert self.aloop is not None
            cancel = CancelEvent(self.aloop)
            spawned = Spawned(self.runtime)
            ctx = TaskContext(task.id, task.key, task.attempts, task.max_attempts, task.queue, {}, logger,
                              cancel_event=cancel, lease_owner=self.owner, spawner=spawned)
            value = await self._call(task, ctx, cancel, lambda: definition.fn(ctx, **args), timeout)
            if value is not None:  # stored with the success; not JSON or too large: Fail
                result = encode_result(value, self.settings.result_max_bytes)
        except BaseException as exc:  # CancelledError too: the handler's, not this runner's
            attempt.outcome = decide(self.plugins, task, exc)
            await self._write(self.completer.settle, task, attempt.outcome, time.perf_counter() - start)
            return False
        duration = time.perf_counter() - start
        attempt.outcome = SUCCEED
        if plain_success(task, ctx, spawned, definition, result) and self.completer.defer_success(task, duration):
            return True
        await self._write(functools.partial(self.completer.succeed, result=result, workflows=spawned.workflows),
                          task, spawned.children, definition.clean_succeeded, duration)
        return False

    async def _call(self, task: TaskRecord, ctx: TaskContext, cancel: CancelEvent,
                    call: Callable[[], Any], timeout: float | None) -> Any:
        """Await the handler in this attempt's task, which its timeout or a cancel cancels while
        (and only while) the handler runs (`HandlerWindow`)."""
        assert self.aloop is not None
        current = asyncio.current_task()
        assert current is not None
        window = HandlerWindow(current)
        timer = self.aloop.call_later(timeout, window.expire) if timeout else None
        cancel.aim(window)
        with self.book.lock:
            self.book.contexts[task.id] = ctx
        try:
            if cancel.is_set():  # cancelled before it started: the handler does not run
                raise asyncio.CancelledError
            ctx.context.update(task.decoded_context())
            call_hook_safely(self.plugins, "gta_restore_context", context=ctx.context)
            value = await call()
        except asyncio.CancelledError:
            if window.expired:
                raise TaskTimeout(f"task ran past its timeout ({timeout:g}s); its coroutine was cancelled") from None
            raise
        finally:
            window.close()
            if timer is not None:
                timer.cancel()
            with self.book.lock:
                self.book.contexts.pop(task.id, None)
        if window.expired:  # it caught the cancellation and returned anyway: still too late
            raise TaskTimeout(f"task ran past its timeout ({timeout:g}s) and ignored the cancellation")
        return value

    async def _write(self, write: Callable[..., None], *args: Any) -> None:
        """An outcome write that must land now, on a writer thread: the loop never waits on SQL."""
        assert self.aloop is not None
        await self.aloop.run_in_executor(self.writers, write, *args)
