"""A worker's running room: the thread runner, which runs handlers on ``threads`` threads.

Each handler slot takes a leased task from the worker's queue, publishes it in the shared
channel while it runs (so the supervisor knows, if this process dies, which tasks were really
executing and count an attempt, and which were only leased), asks `outcomes.decide` what its
ending means and hands that to the `Completer`. Leasing and completion know nothing of threads:
another runner (asyncio) can take tasks from the same queue and report to the same completer.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from ..outcomes import SUCCEED, decide
from ..plugins import call_hook_safely, report_task_events
from ..results import encode_result
from ..runtime import Runtime
from ..scopes import Attempt, scope
from ..tasks import TaskContext, TaskRecord
from .channel import WorkerChannel
from .completer import Completer, task_logger
from .coroutines import run_to_end
from .execute import Spawned, checked_call, plain_success
from .held_leases import HeldLeases, Room
from .leasing import Leaser

log = logging.getLogger("gta.worker")


class ThreadRunner(Room):
    """``threads`` handler threads fed from ``todo``; ``None`` in the queue stops one."""

    def __init__(self, runtime: Runtime, channel: WorkerChannel, book: HeldLeases,
                 todo: queue.SimpleQueue[TaskRecord | None], leaser: Leaser, completer: Completer) -> None:
        super().__init__(runtime.settings, runtime.store, channel, book)
        self.runtime = runtime
        self.plugins = runtime.plugins
        self.todo = todo
        self.leaser = leaser
        self.completer = completer
        self.stopping = threading.Event()

    def threads(self, vital: Callable[..., None]) -> list[threading.Thread]:
        """The handler threads, each running its loop under ``vital`` (not started)."""
        return [threading.Thread(target=vital, args=(self.loop, slot), name=f"gta-handler-{slot}", daemon=True)
                for slot in range(self.settings.threads)]

    def stop(self) -> None:
        """Let the running tasks finish; start no more."""
        self.stopping.set()
        for _ in range(self.settings.threads):
            self.todo.put(None)

    def running(self) -> list[int]:
        """Ids of the tasks the handler slots run now."""
        with self.book.lock:
            return [task_id for task_id in self.channel.running if task_id]

    def loop(self, slot: int) -> None:
        channel = self.channel
        while True:
            task = self.todo.get()
            if task is None or self.stopping.is_set():
                return
            if self.leaser.lapsed(task):
                continue
            started = time.monotonic()
            definition = self.plugins.registry.find(task.key)
            timeout = definition.timeout if definition is not None else None
            channel.publish(slot, task.id, started, started + timeout if timeout else 0.0)
            began = time.perf_counter()
            # An exception escaping `run` (a plugin's SystemExit, say) ends the process
            # (`Worker._vital`) with this task still published as running: its attempt counts,
            # so a task that keeps killing its thread ends failed instead of looping.
            attempt = Attempt(task, self.owner)
            with scope(self.plugins, "gta_attempt", attempt=attempt):
                deferred = self.run(task, attempt)
            channel.clear(slot)
            if not deferred:
                self.book.forget([task])
            self.book.ran(time.perf_counter() - began)
            self.leaser.nudge()

    def run(self, task: TaskRecord, attempt: Attempt) -> bool:
        """Run one task and record its outcome (telling ``attempt`` which); True when a plain
        success was handed to the completer thread (which records it, batched with others, and
        then forgets the task)."""
        logger = logging.LoggerAdapter(task_logger(task.key), {"task_id": task.id, "attempt": task.attempts})
        report_task_events(self.plugins, "started", [task])
        start = time.perf_counter()
        result = None
        try:
            definition, args = checked_call(self.settings, self.plugins.registry, task)
            context = task.decoded_context()
            call_hook_safely(self.plugins, "gta_restore_context", context=context)
            spawned = Spawned(self.runtime)
            ctx = TaskContext(task.id, task.key, task.attempts, task.max_attempts, task.queue, context, logger,
                              lease_owner=self.owner, spawner=spawned)
            with self.book.lock:
                self.book.contexts[task.id] = ctx
            try:
                # run_to_end: an async handler in a worker without an async runner (this line is
                # the first of every handler's traceback: a comment on it would be printed there)
                value = run_to_end(definition.fn(ctx, **args))
                if value is not None:  # stored with the success; not JSON or too large: Fail
                    result = encode_result(value, self.settings.result_max_bytes)
            finally:
                with self.book.lock:
                    self.book.contexts.pop(task.id, None)
        except BaseException as exc:  # a handler's SystemExit must not kill the thread silently
            attempt.outcome = decide(self.plugins, task, exc)
            self.completer.settle(task, attempt.outcome, time.perf_counter() - start)
            return False
        duration = time.perf_counter() - start
        attempt.outcome = SUCCEED
        if plain_success(task, ctx, spawned, definition, result) and self.completer.defer_success(task, duration):
            return True
        self.completer.succeed(task, spawned.children, definition.clean_succeeded, duration, result=result,
                               workflows=spawned.workflows)
        return False
