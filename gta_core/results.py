"""Task results: what a handler returned, stored with its success; ``result`` and ``wait``.

A handler's return value other than None is encoded as JSON and written in the same fenced
statement as the success (the ``result`` column). A value that is not JSON, or whose encoding is
longer than ``result_max_bytes``, fails the task at once with a clear error (`Fail`, through
the outcome rule): the caller asked for a value, and silently dropping it would leave a
``succeeded`` task whose result reads as None. A task that returns None writes nothing more
than before, and keeps the batched success path.

``wait`` blocks until the task is final: on PostgreSQL it LISTENs on the table's ``done``
channel (final writes NOTIFY it) through ``listen_url`` when set (``off``: it polls), elsewhere
it polls, from 10 ms doubling to half a second.
"""
from __future__ import annotations

import dataclasses
import json
import select
import time
from typing import Any

from .db.connect import drop_connection, open_database
from .errors import Fail, GTAError
from .handles import OWN_TRANSACTION
from .handles.api_errors import gta_errors
from .handles.peewee import database_of
from .runtime import get_runtime
from .store.sql.statements import FINAL_STATUSES
from .submit import task_id_list

#: the longest a waiter sleeps between two reads, even on PostgreSQL (a missed notification,
#: or a final write that sends none, costs at most this much)
LONGEST_POLL = 0.5


@dataclasses.dataclass(frozen=True)
class TaskResult:
    """A task's status and, once it succeeded, the value its handler returned (else None);
    ``error`` is the first line of the last error of a failed or cancelled task."""

    status: str
    value: Any = None
    error: str | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


def encode_result(value: Any, limit: int) -> str | None:
    """The JSON text stored for a handler's return value (None for None); `Fail` for a value
    that is not JSON or longer than ``limit`` bytes once encoded."""
    if value is None:
        return None
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise Fail(f"the handler's return value is not JSON ({exc}): return a JSON value, or None") from None
    if len(text) > limit:  # json.dumps escapes to ASCII: characters are bytes
        raise Fail(f"the handler's return value is {len(text)} bytes as JSON, more than result_max_bytes "
                   f"({limit}): store large data elsewhere and return a reference to it")
    return text


def from_row(row: tuple[str, str | None, str | None]) -> TaskResult:
    status, text, error = row
    value = json.loads(text) if text is not None and status == "succeeded" else None
    first = (error or "").strip().splitlines()
    return TaskResult(status, value, first[0] if first and status in ("failed", "cancelled") else None)


@gta_errors
def result(task_id: int, db: Any = OWN_TRANSACTION) -> TaskResult | None:
    """Task ``task_id``'s status and result, or None when no row has the id (it never existed,
    or cleanup, ``clean_succeeded`` or ``gta purge`` deleted it). ``db`` is a handle as for
    `status`. In eager mode (`gta_core.testing`) the run answers: the handler's return value."""
    (checked,) = task_id_list([task_id])
    runtime = get_runtime()
    if runtime.eager is not None:  # `gta_core.testing.eager`: no rows, the run knows
        return runtime.eager.result(checked)  # type: ignore[no-any-return]
    store = runtime.store_for(database_of(db, runtime, "db"))
    with store._table_required():
        row = store.result_row(checked)
    return None if row is None else from_row(row)


@gta_errors
def wait(task_id: int, timeout: float | None = None) -> TaskResult | None:
    """Block until task ``task_id`` is final and return its `TaskResult`; None when no row has
    the id (or it was deleted meanwhile: ``clean_succeeded`` deletes a success's row).
    `TimeoutError` when it is not final after ``timeout`` seconds (None: wait as long as it takes).

    Reads on GTA's own connection, each read a transaction of its own: call it outside your
    transaction, which could not see the task's later writes.
    """
    (checked,) = task_id_list([task_id])
    if timeout is not None and not timeout >= 0:
        raise GTAError(f"timeout must be a number of seconds >= 0 or None, not {timeout!r}")
    runtime = get_runtime()
    if runtime.eager is not None:  # handlers ran at commit: final now, or never until the caller commits
        found = result(checked)
        if found is not None and not found.final:
            raise TimeoutError(f"task {checked} is {found.status}: in eager mode it runs when the transaction "
                               "that submitted it commits")
        return found
    deadline = None if timeout is None else time.monotonic() + timeout
    listen = runtime.settings.listen_url
    listener = _Listener(runtime, listen or runtime.settings.database_url) \
        if runtime.store.dialect == "postgres" and listen != "off" else None
    try:
        pause = 0.01
        while True:
            found = result(checked)
            if found is None or found.final:
                return found
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"task {checked} is still {found.status} after {timeout}s")
            step = pause if left is None else min(pause, left)
            if listener is not None:
                listener.wait(min(LONGEST_POLL, left) if left is not None else LONGEST_POLL)
            else:
                time.sleep(step)
                pause = min(pause * 2, LONGEST_POLL)
    finally:
        if listener is not None:
            listener.close()


class _Listener:
    """A connection of its own LISTENing on the table's ``done`` channel (PostgreSQL)."""

    def __init__(self, runtime: Any, url: str) -> None:
        """``url``: `listen_url` where set (LISTEN needs a session: not through PgBouncer in
        transaction mode), else the database's."""
        self.db = open_database(url, statement_timeout=0)
        self.conn = self.db.connection()
        self.conn.autocommit = True
        with self.conn.cursor() as cursor:
            cursor.execute(f'LISTEN "{runtime.store.wf.done_channel}"')

    def wait(self, seconds: float) -> None:
        """Until a notification arrives or ``seconds`` pass."""
        if select.select([self.conn], [], [], max(0.0, seconds))[0]:
            self.conn.poll()
            self.conn.notifies.clear()

    def close(self) -> None:
        drop_connection(self.db)


__all__ = ["TaskResult", "encode_result", "result", "wait"]
