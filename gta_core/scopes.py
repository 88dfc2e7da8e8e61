"""Scopes: context managers that plugins hold around a piece of GTA's work.

Three hooks return one, or None: `hookspecs.gta_submit` (the writing of submitted tasks),
`hookspecs.gta_attempt` (one attempt of a task in a worker) and `hookspecs.gta_settle` (the
supervisor settling tasks whose worker cannot). GTA enters it where the work begins and exits
it where the work ends, on the thread (or in the asyncio task) doing the work. Tracing needs
that shape and the lifecycle events cannot give it: a span must be current while the work runs,
so that what the work does (a handler's own spans, the children it submits, the driver's
statements) nests under it; it must see the rows before they are written, to store its context
with them; and it must end when the work ends, with what became of it.

With no plugin implementing a hook, entering its scope costs a set look-up. A context manager
that raises when entered or exited is logged and counted (`Plugins.hook_errors`) like any hook
error; it never hides, replaces or swallows the exception of the work it wraps.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from .outcomes import Outcome
from .plugins import Plugins, call_hook_safely
from .store.inserts import NewTask
from .tasks import TaskRecord

log = logging.getLogger("gta.plugins")

#: what a scope without any plugin's context manager is
NOTHING: contextlib.AbstractContextManager[None] = contextlib.nullcontext()


@dataclasses.dataclass
class Submission:
    """Tasks being submitted, as `gta_submit`'s context managers see them.

    ``tasks`` are the checked rows about to be written, in the order given. On entering, a
    plugin may add to what each task carries to its handler (its ``context`` column, written
    with the row in the caller's transaction) with `carry`. ``ids`` are set once the rows are
    written, before the scope exits; they stay None when the write raised, and for ``deferred``
    tasks: those a running handler creates (``ctx.submit``, ``ctx.group``, ``ctx.chain``), which
    are written later, with its success. ``held`` are the indexes of tasks written to wait for
    others (a group's callback, a chain's steps after the first).
    """

    tasks: list[NewTask]
    deferred: bool = False
    held: frozenset[int] = frozenset()
    ids: list[int] | None = None

    def context(self, index: int) -> dict[str, Any]:
        """What task ``index`` carries to its handler so far (captured and given at submit)."""
        text = self.tasks[index].context
        value = json.loads(text) if text else {}
        return value if isinstance(value, dict) else {}

    def carry(self, index: int, values: Mapping[str, str]) -> None:
        """Add ``values`` to what task ``index`` carries to its handler (replacing same names)."""
        context = {**self.context(index), **values}
        text = json.dumps(context, separators=(",", ":"), sort_keys=True)
        self.tasks[index] = dataclasses.replace(self.tasks[index], context=text)

    def due_later(self, index: int) -> bool:
        """Task ``index`` will not be due as soon as it is written: it has a delay, a ``run_at``
        in the future, or is held for other tasks."""
        task = self.tasks[index]
        if index in self.held or task.delay > 0:
            return True
        return task.run_at is not None and task.run_at > dt.datetime.now(dt.timezone.utc)

    def written(self, ids: list[int]) -> list[int]:
        """Record the ids the write returned, and return them."""
        self.ids = ids
        return ids


@dataclasses.dataclass
class Attempt:
    """One attempt of a task in a worker, as `gta_attempt`'s context managers see it.

    ``task`` is the leased row (``task.attempts`` counts this attempt); ``worker`` the lease
    owner running it. ``outcome`` is set by the runner as soon as the outcome rule has decided
    it (`outcomes.decide`), before it is written; None if the attempt ended without one.
    """

    task: TaskRecord
    worker: str
    outcome: Outcome | None = None


def announce(plugins: Plugins, submission: Submission) -> list[NewTask]:
    """Hold the plugins' submit scope around nothing, for tasks a running handler created
    (``submission.deferred``: they are written with its success); their rows as it left them."""
    with scope(plugins, "gta_submit", submission=submission):
        pass
    return submission.tasks


def scope(plugins: Plugins, hook: str, **kwargs: Any) -> contextlib.AbstractContextManager[None]:
    """The context managers the plugins' implementations of ``hook`` return for this piece of
    work, as one context manager (`NOTHING` when none does)."""
    if hook not in plugins.implemented:
        return NOTHING
    managers = [manager for manager in call_hook_safely(plugins, hook, **kwargs) if manager is not None]
    return Scope(plugins, hook, managers) if managers else NOTHING


class Scope:
    """Several plugins' context managers, entered in order and exited in reverse; what one of
    them raises is logged and counted, and the others still run."""

    def __init__(self, plugins: Plugins, hook: str, managers: list[Any]) -> None:
        self.plugins = plugins
        self.hook = hook
        self.managers = managers
        self.entered: list[Any] = []

    def __enter__(self) -> None:
        for manager in self.managers:
            try:
                manager.__enter__()
            except Exception:
                self._failed(manager, "entering")
            else:
                self.entered.append(manager)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        while self.entered:
            manager = self.entered.pop()
            try:
                manager.__exit__(kind, error, traceback)  # what it answers cannot swallow the work's error
            except Exception:
                self._failed(manager, "exiting")

    def _failed(self, manager: Any, when: str) -> None:
        log.exception("plugin context manager %r failed %s its %s scope", manager, when, self.hook)
        self.plugins.hook_errors += 1
