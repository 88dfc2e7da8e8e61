"""Submitting tasks inside the caller's transaction (the transactional message).

The row is written with the caller's own connection, so it exists if and only if the
caller's transaction commits. Everything that can be checked is checked before the first
byte is written (`validation.prepare`).
"""
from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import peewee

from .database import in_transaction
from .errors import GTAError, InvalidArguments, SubmitError
from .runtime import Runtime, get_runtime
from .store import TaskStore
from .store_insert import NewTask
from .validation import Delay, TaskRequest, capture_context, integer, prepare
from .wake import notify_local


class _OwnTransaction:
    """The type of `OWN_TRANSACTION`: one instance, named in reprs and docs."""

    def __repr__(self) -> str:
        return "gta_core.OWN_TRANSACTION"


#: The handle that leaves the caller's transaction on purpose: GTA's own connection to the
#: configured database, in a transaction of its own (or the one open on that connection, as
#: inside ``gta_core.transaction()``). The task is then committed whatever the caller's
#: transaction does; ``None`` is refused, so that a handle that happens to be None (an unset
#: variable, a context manager that yields nothing) never loses that promise silently.
OWN_TRANSACTION: Any = _OwnTransaction()



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
    none is open), what ``db.atomic()``/``db.transaction()`` returned, or `OWN_TRANSACTION`
    for GTA's own connection to the configured database, outside the caller's transaction.
    ``None`` raises `SubmitError` before anything is written.
    """
    request = TaskRequest(key, args, delay, run_at, priority, queue, dedupe_key, order_key, max_attempts, context)
    return submit_many(db_tx, [request])[0]


def submit_many(db_tx: Any, items: Iterable[TaskRequest | tuple[str, Mapping[str, Any] | None]]) -> list[int]:
    """Insert many tasks in one statement per chunk (500 rows; 5,000 on PostgreSQL, whose
    bulk insert takes a parameter per column, not per value); ids in the order given. Rows
    with a dedupe key are inserted one by one."""
    runtime = get_runtime()
    db = resolve_handle(db_tx, runtime)
    requests = [_request(item) for item in items]
    if not requests:
        return []
    captured = capture_context(runtime)
    rows = [prepare(runtime, request, captured) for request in requests]
    if runtime.eager is not None:
        return _run_eagerly(runtime, db, rows)
    store = runtime.store_for(db)
    if db.in_transaction():
        ids = store.insert(rows)
        _wake_after_commit(runtime, db, store)
        return ids
    ids = in_transaction(db, lambda: store.insert(rows))
    _wake(runtime, db, store)
    return ids


def _request(item: Any) -> TaskRequest:
    if isinstance(item, TaskRequest):
        return item
    if isinstance(item, tuple) and 1 <= len(item) <= 2:
        return TaskRequest(*item)
    raise InvalidArguments(f"submit_many takes TaskRequest items or (key, args) tuples, not {type(item).__name__}")


def cancel(task_ids: int | Iterable[int], force: bool = False, db: Any = OWN_TRANSACTION) -> dict[int, str]:
    """Cancel tasks by id: a pending task never runs; a running one ends ``cancelled`` and its
    handler sees ``ctx.cancelled`` (with ``force=True`` its worker process is killed instead).

    ``db`` is a handle as for `submit` (by default GTA's own connection). Returns each id's
    status before the call (ids that do not exist are left out).
    """
    runtime = get_runtime()
    return runtime.store_for(resolve_handle(db, runtime, "db")).cancel(task_id_list(task_ids), force)


def task_id_list(task_ids: Any) -> list[int]:
    """Ids as a list; `GTAError` for anything that is none (the characters of a string, an
    int beyond the 64-bit id column, which drivers refuse with errors of their own)."""
    if isinstance(task_ids, int) and not isinstance(task_ids, bool):
        task_ids = [task_ids]
    elif isinstance(task_ids, (str, bytes)) or not isinstance(task_ids, Iterable):
        raise GTAError(f"task ids must be an int or an iterable of ints, not {type(task_ids).__name__}")
    ids = list(task_ids)
    for task_id in ids:
        if not integer(task_id, -(2**63), 2**63 - 1):
            raise GTAError(f"task ids must be 64-bit integers, not {task_id!r:.40}")
    return ids


@contextlib.contextmanager
def transaction(db: Any = OWN_TRANSACTION) -> Iterator[Any]:
    """``db.atomic()`` that wakes this host's workers the moment it commits (the commit hook);
    ``db`` is a handle as for `submit`, by default GTA's own connection."""
    runtime = get_runtime()
    db = resolve_handle(db, runtime, "db")
    with db.atomic() as tx:
        yield tx
        _wake_after_commit(runtime, db, runtime.store_for(db))


def resolve_handle(handle: Any, runtime: Runtime, name: str = "db_tx") -> peewee.Database:
    """The peewee Database a transaction handle writes through: the one place that decides
    what a handle may be (`SubmitError`, before anything is written, for anything else)."""
    if handle is OWN_TRANSACTION:
        return runtime.db
    if handle is None:
        raise SubmitError(f"{name} is None: pass your transaction (what db.atomic() returned, or the peewee "
                          "Database) to write inside it, or gta_core.OWN_TRANSACTION to commit on GTA's own "
                          "connection regardless of yours")
    if isinstance(handle, peewee.Database):
        return handle
    db = getattr(handle, "db", None)
    if isinstance(db, peewee.Database):
        return db
    raise SubmitError(f"{name} must be a peewee Database, what db.atomic() returned, or gta_core.OWN_TRANSACTION; "
                      f"got {type(handle).__name__}")


def _run_eagerly(runtime: Runtime, db: peewee.Database, rows: list[NewTask]) -> list[int]:
    """Eager mode (`gta_core.testing`): no row is written; handlers run once the caller commits."""
    run = runtime.eager
    ids = [run.next_id() for _ in rows]

    def execute() -> None:
        for task_id, row in zip(ids, rows, strict=True):
            run.execute(runtime, task_id, row.key, row.args, row.context, row.queue, row.max_attempts)

    def after_commit() -> None:
        """Run after COMMIT; if a handler raises, peewee answers by rolling back a transaction
        that is already over, which SQLite refuses with an error that hides the handler's.
        An empty transaction opened first gives that rollback something to end."""
        try:
            execute()
        except BaseException:
            try:
                db.execute_sql("BEGIN")
            except Exception:  # then the rollback's own error wins, the handler's stays its context
                pass
            raise
    if db.in_transaction():
        db.after_commit(after_commit)
    else:
        execute()
    return ids


def _wake(runtime: Runtime, db: peewee.Database, store: TaskStore) -> None:
    if store.dialect != "postgres":
        notify_local(runtime.wake_key(db))


def _wake_after_commit(runtime: Runtime, db: peewee.Database, store: TaskStore) -> None:
    """Register one local wake-up for when the caller's outermost transaction commits."""
    if store.dialect == "postgres":
        return
    transactions = db._state.transactions  # type: ignore[attr-defined]  # peewee's transaction stack
    top = transactions[0] if transactions else None
    if top is None or getattr(top, "_gta_wake", False):
        return
    try:
        db.after_commit(lambda: _wake(runtime, db, store))
    except ValueError:  # manual commit mode has no commit hook; polling will find the task
        return
    top._gta_wake = True
