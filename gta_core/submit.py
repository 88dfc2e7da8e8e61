"""Submitting tasks inside the caller's transaction (the transactional message).

The row is written with the caller's own connection, so it exists if and only if the
caller's transaction commits. Everything that can be checked is checked before the first
byte is written: arguments are JSON-encodable, the key is known, the arguments bind to the
handler's signature.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import peewee

from . import handles
from .errors import GTAError, InvalidArguments
from .handles.peewee import wake_after_commit
from .plugins import call_hook_safely
from .runtime import Runtime, get_runtime
from .store import NewTask
from .tasks import dump_args

Delay = float | int | dt.timedelta
#: bounds of the INTEGER columns (priority, max_attempts) on PostgreSQL and MySQL
INT_LIMIT = 2**31
#: the longest delay: far beyond any real schedule, and run_at stays a representable timestamp
MAX_DELAY = 100 * 365.25 * 86400
STORABLE_RULE = ("must be a non-empty string of at most 191 characters, without NUL or lone surrogates, "
                 "not ending in a space")


@dataclasses.dataclass(frozen=True)
class TaskRequest:
    """One task to submit; see `submit` for the meaning of each field."""

    key: str
    args: Mapping[str, Any] | None = None
    delay: Delay | None = None
    run_at: dt.datetime | None = None
    priority: int | None = None
    queue: str | None = None
    dedupe_key: str | None = None
    order_key: str | None = None
    max_attempts: int | None = None
    context: Mapping[str, Any] | None = None
    parent_id: int | None = None


def submit(
    db_tx: Any,
    key: str,
    args: Mapping[str, Any] | None = None,
    *,
    delay: Delay | None = None,
    run_at: dt.datetime | None = None,
    priority: int | None = None,
    queue: str | None = None,
    dedupe_key: str | None = None,
    order_key: str | None = None,
    max_attempts: int | None = None,
    context: Mapping[str, Any] | None = None,
) -> int:
    """Insert one task in the transaction of ``db_tx`` and return its id.

    ``db_tx`` is a peewee Database (its current transaction is used, or one of its own when
    none is open), what ``db.atomic()``/``db.transaction()`` returned, or None for the
    configured database in a transaction of its own; or the application's own handle: a
    SQLAlchemy Session or Connection, a Django connection inside ``transaction.atomic()``,
    or a sqlite3/psycopg2/psycopg/pymysql connection (see docs/integrations.md).
    """
    request = TaskRequest(key, args, delay, run_at, priority, queue, dedupe_key, order_key, max_attempts, context)
    return submit_many(db_tx, [request])[0]


def submit_many(db_tx: Any, items: Iterable[TaskRequest | tuple[str, Mapping[str, Any] | None]]) -> list[int]:
    """Insert many tasks in one statement (per 500 rows); ids in the order given."""
    runtime = get_runtime()
    handle = handles.resolve(db_tx, runtime)
    requests = [_request(item) for item in items]
    if not requests:
        return []
    captured = capture_context(runtime)
    rows = [prepare(runtime, request, captured) for request in requests]
    if runtime.eager is not None:
        return _run_eagerly(runtime, handle, rows)
    return handle.insert(runtime, rows)


def _request(item: Any) -> TaskRequest:
    if isinstance(item, TaskRequest):
        return item
    if isinstance(item, tuple) and 1 <= len(item) <= 2:
        return TaskRequest(*item)
    raise InvalidArguments(f"submit_many takes TaskRequest items or (key, args) tuples, not {type(item).__name__}")


def cancel(task_ids: int | Iterable[int], force: bool = False, db: Any = None) -> dict[int, str]:
    """Cancel tasks by id: a pending task never runs; a running one ends ``cancelled`` and its
    handler sees ``ctx.cancelled`` (with ``force=True`` its worker process is killed instead).

    ``db`` is a handle as for `submit` (the cancel then commits with its transaction), or None
    for GTA's own connection. Returns each id's status before the call (ids that do not exist
    are left out).
    """
    runtime = get_runtime()
    ids = _task_ids(task_ids)
    return handles.resolve(db, runtime).cancel(runtime, ids, force)


def _task_ids(task_ids: Any) -> list[int]:
    """Ids as a list; `GTAError` for anything that is none (the characters of a string, an
    int beyond the 64-bit id column, which drivers refuse with errors of their own)."""
    if isinstance(task_ids, int) and not isinstance(task_ids, bool):
        task_ids = [task_ids]
    elif isinstance(task_ids, (str, bytes)) or not isinstance(task_ids, Iterable):
        raise GTAError(f"task ids must be an int or an iterable of ints, not {type(task_ids).__name__}")
    ids = list(task_ids)
    for task_id in ids:
        if not _integer(task_id, -(2**63), 2**63 - 1):
            raise GTAError(f"task ids must be 64-bit integers, not {task_id!r:.40}")
    return ids


@contextlib.contextmanager
def transaction(db: peewee.Database | None = None) -> Iterator[Any]:
    """``db.atomic()`` that wakes this host's workers the moment it commits (the commit hook)."""
    runtime = get_runtime()
    db = runtime.db if db is None else db
    with db.atomic() as tx:
        yield tx
        wake_after_commit(runtime, db, runtime.store_for(db))


def capture_context(runtime: Runtime) -> dict[str, Any]:
    """What every plugin's ``gta_capture_context`` returns, merged: the context a task submitted
    now (by `submit`, or by ``ctx.submit`` inside a handler) carries to its handler."""
    merged: dict[str, Any] = {}
    for part in call_hook_safely(runtime.plugins, "gta_capture_context"):
        if isinstance(part, Mapping):
            merged.update(part)
    return merged


def prepare(runtime: Runtime, request: TaskRequest, captured: Mapping[str, Any] | None = None) -> NewTask:
    """Check a request completely and turn it into the row to insert; raises `SubmitError`."""
    key = request.key
    if not isinstance(key, str):
        raise InvalidArguments(f"task key must be a string, not {type(key).__name__}")
    definition = runtime.plugins.registry.get(key)
    args_text = dump_args(key, request.args)
    definition.check_args(request.args or {})  # its keys are the stored ones: dump_args refuses others
    context = {**(captured or {}), **_mapping(key, request.context)}
    context_text = dump_args(key, context, "context") if context else None
    priority = definition.priority if request.priority is None else request.priority
    max_attempts = definition.max_attempts if request.max_attempts is None else request.max_attempts
    queue = definition.queue if request.queue is None else request.queue
    _check(_integer(priority, -INT_LIMIT, INT_LIMIT - 1), key, "priority must be an integer that fits 32 bits")
    _check(_integer(max_attempts, 1, INT_LIMIT - 1), key, "max_attempts must be an integer from 1 to 2**31 - 1")
    _check(_storable(queue), key, f"queue {STORABLE_RULE}")
    for name in ("dedupe_key", "order_key"):
        value = getattr(request, name)
        _check(value is None or _storable(value), key, f"{name} {STORABLE_RULE}")
    _check(request.parent_id is None or _integer(request.parent_id, 1, 2**63 - 1), key,
           "parent_id must be a task id")
    if request.run_at is not None and request.delay is not None:
        raise InvalidArguments(f"task {key!r}: give delay or run_at, not both")
    if request.run_at is not None:
        if not isinstance(request.run_at, dt.datetime) or request.run_at.tzinfo is None:
            raise InvalidArguments(f"task {key!r}: run_at must be a timezone-aware datetime "
                                   "(a naive one is ambiguous)")
        try:
            run_at = request.run_at.astimezone(dt.timezone.utc)
        except OverflowError:
            raise InvalidArguments(f"task {key!r}: run_at is outside the years 1 to 9999 in UTC") from None
        return NewTask(key, queue, priority, args_text, context_text, max_attempts, run_at=run_at,
                       dedupe_key=request.dedupe_key, order_key=request.order_key, parent_id=request.parent_id)
    delay = request.delay or 0
    delay = delay.total_seconds() if isinstance(delay, dt.timedelta) else delay
    # a chained comparison, not math.isfinite: that raises on an int too large for a float
    _check(isinstance(delay, (int, float)) and not isinstance(delay, bool) and 0 <= delay <= MAX_DELAY,
           key, "delay must be a number of seconds from 0 to 100 years")
    return NewTask(key, queue, priority, args_text, context_text, max_attempts, delay=float(delay),
                   dedupe_key=request.dedupe_key, order_key=request.order_key, parent_id=request.parent_id)


def _check(ok: bool, key: str, rule: str) -> None:
    if not ok:
        raise InvalidArguments(f"task {key!r}: {rule}")


def _integer(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _storable(value: Any) -> bool:
    """A string every database keeps unchanged and distinct in a VARCHAR(191) column:
    PostgreSQL refuses NUL, no driver encodes a lone surrogate, and MariaDB's PAD SPACE
    collation compares 'a ' equal to 'a' (one dedupe key, one queue, one FIFO for both)."""
    if not isinstance(value, str) or not 0 < len(value) <= 191 or "\x00" in value or value.endswith(" "):
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _mapping(key: str, context: Any) -> Mapping[str, Any]:
    if context is None:
        return {}
    if not isinstance(context, Mapping):
        raise InvalidArguments(f"context for task {key!r} must be a dict, not {type(context).__name__}")
    return context


def _run_eagerly(runtime: Runtime, handle: handles.Handle, rows: list[NewTask]) -> list[int]:
    """Eager mode (`gta_core.testing`): no row is written; handlers run once the caller commits."""
    run = runtime.eager
    ids = [run.next_id() for _ in rows]

    def execute() -> None:
        for task_id, row in zip(ids, rows, strict=True):
            run.execute(runtime, task_id, row.key, row.args, row.context, row.queue, row.max_attempts)
    handle.after_commit(execute)
    return ids
