"""Submitting from async code (FastAPI and the like) without blocking the event loop.

`asubmit`/`asubmit_many` are `submit`/`submit_many` for an application's async connection
(asyncpg, psycopg 3 ``AsyncConnection``, aiomysql, aiosqlite, SQLAlchemy ``AsyncSession`` or
``AsyncConnection``): the same checks (`submit.prepare_all`, before anything is written), the
same statements (the store's insert plan, awaited on the caller's connection inside its open
transaction), the same wake-up (PostgreSQL's ``NOTIFY`` at commit, elsewhere a commit hook
where the driver has one) and the same eager mode. A handle `submit` takes (a sqlite3 or
peewee connection, a sync SQLAlchemy Session, `OWN_TRANSACTION`) is written synchronously,
as `submit` would: a short local write on SQLite, a blocking round trip elsewhere.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from . import handles
from .handles.api_errors import gta_errors
from .handles.async_connection import resolve
from .runtime import get_runtime
from .scopes import Submission, scope
from .submit import prepare_all, run_eagerly
from .validation import Delay, TaskRequest

__all__ = ["asubmit", "asubmit_many"]


@gta_errors
async def asubmit(
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
    """Insert one task in the transaction of the async handle ``db_tx`` and return its id.

    ``db_tx`` is an asyncpg connection inside ``async with conn.transaction():``, a psycopg
    ``AsyncConnection``, an aiomysql or aiosqlite connection, or a SQLAlchemy ``AsyncSession`` or
    ``AsyncConnection``; the task exists if and only if that transaction commits. Any handle
    `submit` takes is accepted too, and written synchronously. Options as for `submit`.
    """
    request = TaskRequest(key, args, delay, run_at, priority, queue, dedupe_key, order_key, max_attempts, context,
                          concurrency_key=concurrency_key)
    return (await asubmit_many(db_tx, [request]))[0]


@gta_errors
async def asubmit_many(db_tx: Any, items: Iterable[TaskRequest | tuple[str, Mapping[str, Any] | None]]) -> list[int]:
    """`submit_many` for an async handle: every item is checked before the first is written;
    ids in the order given."""
    runtime = get_runtime()
    handle = await resolve(db_tx, runtime)
    sync = handles.resolve(db_tx, runtime) if handle is None else None
    rows = prepare_all(runtime, items)
    if not rows:
        return []
    submission = Submission(rows)
    with scope(runtime.plugins, "gta_submit", submission=submission):
        if runtime.eager is not None:
            return submission.written(run_eagerly(runtime, (handle or sync).after_commit,  # type: ignore[union-attr]
                                                  submission.tasks))
        if handle is None:
            assert sync is not None
            return submission.written(sync.insert(runtime, submission.tasks))
        return submission.written(await handle.insert(runtime, submission.tasks))
