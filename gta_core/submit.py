"""Submitting tasks inside the caller's transaction (the transactional message).

The row is written with the caller's own connection, so it exists if and only if the
caller's transaction commits. Everything that can be checked is checked before the first
byte is written (`validation.prepare`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import peewee

from . import handles
from .errors import GTAError, InvalidArguments
from .handles import OWN_TRANSACTION
from .handles.api_errors import gta_errors, translated
from .handles.peewee import database_of, wake_after_commit
from .queues import actor
from .runtime import Runtime, get_runtime
from .scopes import Submission, scope
from .store.inserts import NewTask
from .validation import Delay, Preparer, TaskRequest, capture_context, integer

__all__ = ["CANCELLABLE", "OWN_TRANSACTION", "CancelResult", "TaskRequest", "cancel", "submit", "submit_many",
           "task_id_list", "transaction"]


@gta_errors
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
    concurrency_key: str | None = None,
) -> int:
    """Insert one task in the transaction of ``db_tx`` and return its id.

    ``db_tx`` is a peewee Database (its current transaction is used, or one of its own when
    none is open), what ``db.atomic()``/``db.transaction()`` returned, or `OWN_TRANSACTION`
    for GTA's own connection to the configured database, outside the caller's transaction.
    ``None`` raises `SubmitError` before anything is written. It may also be the
    application's own handle: a SQLAlchemy Session or Connection, a Django connection inside
    ``transaction.atomic()``, or a sqlite3/psycopg2/psycopg/pymysql connection (see
    docs/integrations.md). ``concurrency_key`` sets the value global limits count the task under
    (by default the value of the argument its ``@task(concurrency_key=...)`` names).
    """
    request = TaskRequest(key, args, delay, run_at, priority, queue, dedupe_key, order_key, max_attempts, context,
                          concurrency_key=concurrency_key)
    return submit_many(db_tx, [request])[0]


@gta_errors
def submit_many(db_tx: Any, items: Iterable[TaskRequest | tuple[str, Mapping[str, Any] | None]]) -> list[int]:
    """Insert many tasks in one statement per chunk (500 rows; 5,000 on PostgreSQL, whose
    bulk insert takes a parameter per column, not per value); ids in the order given. Rows
    with a dedupe key are inserted one by one."""
    runtime = get_runtime()
    handle = handles.resolve(db_tx, runtime)
    rows = prepare_all(runtime, items)
    if not rows:
        return []
    submission = Submission(rows)
    with scope(runtime.plugins, "gta_submit", submission=submission):
        if runtime.eager is not None:
            return submission.written(run_eagerly(runtime, handle.after_commit, submission.tasks))
        return submission.written(handle.insert(runtime, submission.tasks))


def prepare_all(runtime: Runtime, items: Iterable[TaskRequest | tuple[str, Mapping[str, Any] | None]]) -> list[NewTask]:
    """Every item of a `submit_many` (or `asubmit_many`) checked and made a row, before any is written."""
    requests = [_request(item) for item in items]
    if not requests:
        return []
    prepare_one = Preparer(runtime, capture_context(runtime))
    return [prepare_one(request) for request in requests]


def _request(item: Any) -> TaskRequest:
    if isinstance(item, TaskRequest):
        return item
    if isinstance(item, tuple) and 1 <= len(item) <= 2:
        return TaskRequest(*item)
    raise InvalidArguments(f"submit_many takes TaskRequest items or (key, args) tuples, not {type(item).__name__}")


@dataclasses.dataclass(frozen=True)
class CancelResult:
    """What `cancel` did to one task: ``cancelled`` is True when this call cancelled it (it was
    ``was``: pending, running, or waiting as a group's callback or a chain's step), False when
    it had ended already (``was``: succeeded, failed or cancelled) and nothing changed."""

    cancelled: bool
    was: str


#: the statuses `cancel` cancels
CANCELLABLE = ("pending", "running", "waiting")


@gta_errors
def cancel(task_ids: int | Iterable[int], force: bool = False, db: Any = OWN_TRANSACTION, *,
           by: str | None = None) -> dict[int, CancelResult]:
    """Cancel tasks by id: a pending task never runs; a running one ends ``cancelled`` and its
    handler sees ``ctx.cancelled`` (with ``force=True`` its worker process is killed instead).

    ``db`` is a handle as for `submit` (the cancel then commits with its transaction), by
    default GTA's own connection. Each cancel is kept in the task's attempt log as done ``by``
    whom (default ``api:user@host`` of this process). Returns what the call did to each task
    (`CancelResult`); ids that do not exist are left out.
    """
    runtime = get_runtime()
    ids = task_id_list(task_ids)
    before = handles.resolve(db, runtime, "db").cancel(runtime, ids, force, by or actor("api"))
    return {task_id: CancelResult(was in CANCELLABLE, was) for task_id, was in before.items()}


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
    ``db`` is a handle as for `submit`, by default GTA's own connection. Its begin and commit
    raise GTA errors (`handles.api_errors`); what the block raises passes through as it is.

    On SQLite it begins IMMEDIATE: it takes the write lock at ``BEGIN``, waiting its turn up
    to the busy timeout, so that reading before submitting cannot get the submit refused at
    once with "database is locked" while another process writes (`gta_core.DatabaseLocked`).
    Nested in an open transaction it is a savepoint of that transaction, as ``atomic()`` is.
    """
    runtime = get_runtime()
    db = database_of(db, runtime, "db")
    atomic = db.atomic(*(["IMMEDIATE"] if isinstance(db, peewee.SqliteDatabase) else []))
    with translated():
        tx = atomic.__enter__()
    try:
        yield tx
    except BaseException as exc:
        atomic.__exit__(type(exc), exc, exc.__traceback__)  # rolls back
        raise
    wake_after_commit(runtime, db)
    with translated():
        atomic.__exit__(None, None, None)  # commits


def run_eagerly(runtime: Runtime, after_commit: Callable[[Callable[[], None]], None],
                rows: list[NewTask]) -> list[int]:
    """Eager mode (`gta_core.testing`): no row is written; handlers run once the caller commits
    (``after_commit``: the handle's hook, `SubmitError` where it has none)."""
    run = runtime.eager
    ids = [run.next_id() for _ in rows]

    def execute() -> None:
        for task_id, row in zip(ids, rows, strict=True):
            run.execute(runtime, task_id, row.key, row.args, row.context, row.queue, row.max_attempts)
    after_commit(execute)
    return ids
