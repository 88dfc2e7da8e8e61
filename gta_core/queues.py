"""Queue controls: pause and resume a queue for every supervisor sharing the database.

The paused state is a row of the ``<table>_queues`` table (created by `gta migrate`), and the
lease statement itself skips paused queues (`Statements.due`), so every supervisor obeys from
the pause's commit on, one started later too, without being told. Tasks already leased run to
their end; submitting still works (the tasks wait). A resume wakes the workers at once:
``NOTIFY`` in the resuming transaction on PostgreSQL (every host), the local wake-up socket
elsewhere (this host; other hosts poll within ``scan_interval``).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import socket

from .errors import GTAError, InvalidQueue
from .handles.api_errors import gta_errors
from .runtime import Runtime, get_runtime
from .store.operations import QueueControl
from .validation import STORABLE_RULE, storable

#: longest ``by`` (a VARCHAR(191) column) and ``reason`` a pause records
TEXT_LIMITS = {"by": 191, "reason": 10_000}


@dataclasses.dataclass(frozen=True)
class QueueState:
    """One queue as `queues` sees it: paused or not, the latest pause or resume (when, by
    whom, why), its depth (pending and running tasks) and when its oldest due task became due."""

    name: str
    paused: bool
    since: dt.datetime | None
    by: str | None
    reason: str | None
    pending: int
    running: int
    oldest_due: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class QueueChange:
    """What `pause_queue` / `resume_queue` did: ``changed`` is False when the queue already was
    in that state (nothing was written); ``known`` is False for a queue that has no task and
    that no handler or ``queues`` setting here names (paused anyway: its tasks wait once submitted)."""

    queue: QueueState
    changed: bool
    known: bool


def default_author() -> str:
    """``user@host`` of this process: who a pause or resume is recorded as by default."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        user = "?"
    return f"{user}@{socket.gethostname()}"


def actor(channel: str) -> str:
    """Who an operator action is recorded as (a pause, an operator retry, a cancel):
    ``channel:user@host`` of this process, ``channel`` being ``cli`` or ``api`` (the dashboard
    records ``dashboard``)."""
    return f"{channel}:{default_author()}"


@gta_errors
def pause_queue(name: str, reason: str | None = None, by: str | None = None) -> QueueChange:
    """Pause queue ``name`` cluster-wide: no worker leases its tasks from the commit on."""
    runtime = _ready(name, reason=reason, by=by)
    changed = runtime.store.pause_queue(name, by or actor("api"), reason)
    return _change(runtime, name, changed)


@gta_errors
def resume_queue(name: str, by: str | None = None) -> QueueChange:
    """Resume queue ``name``: its due tasks are leased again, and the workers are woken at once."""
    runtime = _ready(name, by=by)
    changed = runtime.store.resume_queue(name, by or actor("api"))
    if changed:
        runtime.wake_idle_workers()
    return _change(runtime, name, changed)


@gta_errors
def queues(runtime: Runtime | None = None) -> list[QueueState]:
    """Every queue that has pending or running tasks, is served by this process's settings, or
    was ever paused, by name. Reads only pending and running rows and the queues table."""
    runtime = runtime or get_runtime()
    store = runtime.store
    controls = {control.name: control for control in store.queue_controls()}
    pending = {queue: (count, oldest) for queue, count, oldest, _, _ in
               store.pending_summary(runtime.settings.initialized_timeout)}
    running = {queue: count for queue, count, _ in store.running_summary(runtime.settings.running_timeout)}
    names = sorted(set(controls) | set(pending) | set(running) | set(runtime.settings.queues))
    return [_state(name, controls.get(name), pending.get(name, (0, None)), running.get(name, 0)) for name in names]


def _state(name: str, control: QueueControl | None, pending: tuple[int, dt.datetime | None],
           running: int) -> QueueState:
    if control is None:
        return QueueState(name, False, None, None, None, pending[0], running, pending[1])
    return QueueState(name, control.paused, control.changed_at, control.changed_by, control.reason,
                      pending[0], running, pending[1])


def check_name(name: str) -> None:
    """Refuse, in one line, a queue name that no task could carry."""
    if not storable(name):
        raise InvalidQueue(f"queue name {name!r} {STORABLE_RULE}")


def _ready(name: str, **texts: str | None) -> Runtime:
    """This process's runtime, once ``name`` and the optional texts are storable and the tables exist."""
    check_name(name)
    for option, text in texts.items():
        if text is not None and not _storable_text(text, TEXT_LIMITS[option]):
            raise GTAError(f"{option} {text!r}: must be a non-empty string of at most {TEXT_LIMITS[option]} "
                           "characters, without NUL or lone surrogates")
    runtime = get_runtime()
    runtime.store.require_schema()
    return runtime


def _storable_text(text: object, limit: int) -> bool:
    if not isinstance(text, str) or not 0 < len(text) <= limit or "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _change(runtime: Runtime, name: str, changed: bool) -> QueueChange:
    state = next(queue for queue in queues(runtime) if queue.name == name)
    return QueueChange(state, changed, _known(runtime, state))


def _known(runtime: Runtime, state: QueueState) -> bool:
    """Whether anything here names the queue: a pending or running task, a handler, or the
    ``queues`` setting (no supervisor registers the queues it serves)."""
    if state.pending or state.running or state.name in runtime.settings.queues:
        return True
    try:
        handlers = list(runtime.plugins.registry.tasks.values())
    except GTAError:  # a broken plugin must not stop an operator pausing a queue
        return False
    return any(definition.queue == state.name for definition in handlers)


__all__ = ["QueueChange", "QueueState", "actor", "default_author", "pause_queue", "queues", "resume_queue"]
