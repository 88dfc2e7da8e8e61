"""The attempt log's queries, mixed into `TaskStore`: each entry written inside the write it
describes, the retention bound, and the reading of a task's entries.

What is logged, and why not more: the task row already holds a task's current attempt (its
number, worker, start, end and status), so a plain success — nearly every attempt — adds
nothing to the log and costs no extra statement; the log keeps what the row is about to
forget: each attempt that ended otherwise (retried, failed, timed out, worker died, rescued,
cancelled, released unrun) and each operator action (an operator retry, a cancel), with who
did it. `gta_core.attempts` puts the log and the row together into a task's timeline.

Every entry is written in the transaction of the task-row write it describes, and only when
that write landed: an outcome write refused by its fence (a lease lost, a late run fenced off)
logs nothing, and history and state never disagree. A task keeps its first and last
``attempts_kept`` entries; those between are deleted as new ones come, and the gap in the
entry numbers says how many went.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import peewee

from ..db.driver_errors import is_missing_table
from ..db.transactions import in_statement, in_transaction
from ..errors import GTAError, SchemaError
from .base import StoreBase
from .rows import placeholders
from .sql.attempts import AttemptStatements, attempt_statements

# How an attempt ended, or what an operator did (an entry's ``outcome``).
SUCCEEDED = "succeeded"
RETRIED = "retried"  # the handler raised (or asked for a retry) and the task is due again later
FAILED = "failed"  # the handler raised and the task failed for good (Fail, or no retry left)
TIMED_OUT = "timed_out"  # the attempt ran past its timeout (worker killed, or coroutine cancelled)
WORKER_DIED = "worker_died"  # the worker process died while running it
RESCUED = "rescued"  # its lease expired (worker frozen, host gone) and rescue took it back
CANCELLED = "cancelled"  # cancelled by an operator (or the application) while pending or running
RELEASED = "released"  # leased but handed back unrun (shutdown, prefetch, worker gone): not counted
RERUN = "rerun"  # an operator put the failed or cancelled task back to pending (``gta retry``)
RUNNING = "running"  # never stored: the attempt in progress, read from the task row

#: the longest error message, and traceback, an entry keeps (head and tail of a longer one)
TEXT_LIMIT = 64 * 1024
#: ids per statement for the entries of many rows
CHUNK = 500

T = TypeVar("T")


class LeaseMoved(GTAError):
    """A row read for an outcome write changed before the write reached it (another transaction
    took the lease or finished the task): the write, and its entries, are rolled back."""


@dataclasses.dataclass(frozen=True)
class LogEntry:
    """What an entry says beyond what the task row gives (its attempt, worker and start):
    how the attempt ended, its error (class path, message, traceback), the retry delay the
    policy chose (None: no retry follows), and for an operator's action who took it."""

    outcome: str
    error_class: str | None = None
    error: str | None = None
    traceback: str | None = None
    retry_delay: float | None = None
    actor: str | None = None

    def params(self) -> tuple[Any, ...]:
        """The entry's columns from ``error_class`` to ``actor``, bounded as stored."""
        return (_bounded(self.error_class, 191), _bounded(self.error, TEXT_LIMIT),
                _bounded(self.traceback, TEXT_LIMIT), self.retry_delay, _bounded(self.actor, 191))


def class_path(kind: type) -> str:
    """``module.QualifiedName`` of an exception class (``builtins.ValueError``), as Django's
    ``TaskError.exception_class_path``."""
    return f"{kind.__module__}.{kind.__qualname__}"


def _bounded(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    if limit < 1000:
        return text[:limit]
    half = (limit - 40) // 2
    return f"{text[:half]}\n… ({len(text) - 2 * half:,} characters cut) …\n{text[-half:]}"


class AttemptQueries(StoreBase):
    """What the attempt log asks of the tables."""

    @property
    def att(self) -> AttemptStatements:
        return attempt_statements(self.dialect, self.table)

    # -- an attempt ended by a fenced write of its row ----------------------------------------
    def ended_write(self, update: str, params: Sequence[Any], task_id: int, attempt: int | None,
                    worker: str | None, entry: LogEntry, then: Callable[[], object] | None = None) -> bool:
        """Run the fenced one-row ``update`` and, if it landed, log the attempt it ended and run
        ``then`` (a group member's count), in one transaction; False when the fence refused it
        (nothing written). On PostgreSQL, outside a transaction and without ``then``, the write
        and its entry are one prepared statement: a failing attempt costs no extra round trip.
        ``params`` end with the fence's (id, owner, attempt)."""
        if self.dialect == "postgres" and then is None and not self.db.in_transaction():
            statement = self.att.ended_write(update)
            values = (*params, attempt, entry.outcome, worker, *entry.params())
            with self._log_required():
                last = in_statement(self.db, lambda: self._last_seqs(self._execute_hot(statement, values), ()))
            if last:
                in_statement(self.db, lambda: self._trim(last))  # rarely a statement at all
            return bool(last)

        def write() -> bool:
            if not self._ended(update, params, task_id, attempt, worker, entry):
                return False
            if then is not None:
                then()
            return True
        try:
            return in_transaction(self.db, write)
        except LeaseMoved:
            return False

    def _ended(self, update: str, params: Sequence[Any], task_id: int, attempt: int | None, worker: str | None,
               entry: LogEntry) -> bool:
        """`ended_write`'s write and entry, in the transaction open on this store's connection."""
        values = (attempt, entry.outcome, worker, *entry.params())
        if self.dialect == "postgres":
            with self._log_required():
                last = self._last_seqs(self._execute_hot(self.att.ended_write(update), (*params, *values)), ())
        elif self.dialect == "mysql":  # the entry first, read without a lock (`AttemptStatements.log_fenced`)
            with self._log_required():
                cursor = self._execute(self.att.log_fenced, (*values, *params[-3:]))
            if cursor.rowcount != 1:
                return False
            if self._execute(update, params).rowcount != 1:
                raise LeaseMoved(f"task {task_id} changed before its outcome write")  # the entry goes too
            last = self._last_seqs(cursor, (task_id,))
        else:  # SQLite: BEGIN IMMEDIATE holds the whole database, the write can go first
            if self._execute(update, params).rowcount != 1:
                return False
            with self._log_required():
                last = self._last_seqs(self._execute(self.att.log_ended, (*values, task_id)), (task_id,))
        self._trim(last)
        return bool(last)

    def log_ended(self, task_id: int, attempt: int | None, worker: str | None, entry: LogEntry) -> None:
        """Log the attempt a fenced write of ``task_id`` just ended, in that write's transaction
        (after it landed). ``attempt`` None: the row's."""
        with self._log_required():
            cursor = self._execute(self.att.log_ended, (attempt, entry.outcome, worker, *entry.params(), task_id))
        self._trim(self._last_seqs(cursor, (task_id,)))

    # -- many rows changed by one write --------------------------------------------------------
    def lock_rows(self, ids: Sequence[int], condition: str, params: Sequence[Any] = (), *,
                  lock: bool = True) -> list[int]:
        """The ids among ``ids`` whose row satisfies ``condition`` (SQL with ``?`` for
        ``params``), in id order, locked until the transaction ends (SQLite: by ``BEGIN
        IMMEDIATE``), so the write that follows changes exactly these. ``lock`` False reads them
        plainly: the writer then checks that it changed as many (`LeaseMoved` otherwise)."""
        found: list[int] = []
        rows = self.att.lock_rows if lock else self.att.rows
        for start in range(0, len(ids), CHUNK):
            chunk = list(ids[start:start + CHUNK])
            statement = self._d.fix(rows.fill(ids=placeholders(len(chunk)), condition=condition))
            found += [int(row[0]) for row in self._execute(statement, (*chunk, *params)).fetchall()]
        return found

    def unless_moved(self, write: Callable[[], T], tries: int = 5) -> T:
        """Run ``write`` in a transaction, again (at most ``tries`` times) when it raised
        `LeaseMoved`: a row it read plainly changed before it wrote it, so its entries would not
        match what it wrote."""
        for _ in range(tries - 1):
            try:
                return in_transaction(self.db, write)
            except LeaseMoved:
                continue
        return in_transaction(self.db, write)

    def log_rows(self, ids: Sequence[int], entry: LogEntry) -> None:
        """Log an entry for each of the rows ``ids`` (locked by `lock_rows`) before the write
        that changes them, in its transaction: each row's attempt, and its worker and start
        while running. Only ``outcome``, ``error`` and ``actor`` of ``entry`` are used."""
        for start in range(0, len(ids), CHUNK):
            chunk = list(ids[start:start + CHUNK])
            statement = self._d.fix(self.att.log_rows.fill(ids=placeholders(len(chunk))))
            with self._log_required():
                cursor = self._execute(statement, (entry.outcome, _bounded(entry.error, TEXT_LIMIT),
                                                   _bounded(entry.actor, 191), *chunk))
            self._trim(self._last_seqs(cursor, chunk))

    # -- retention -----------------------------------------------------------------------------
    def _last_seqs(self, cursor: Any, ids: Sequence[int]) -> dict[int, int]:
        """Task id → number of its newest entry, for the entries ``cursor``'s insert just wrote:
        returned by the insert, or on MySQL/MariaDB the insert id of a single entry, else read back."""
        if self.att.returns:
            return {int(task_id): int(seq) for task_id, seq in cursor.fetchall()}
        if not ids or cursor.rowcount < 1:
            return {}
        if len(ids) == 1 and cursor.rowcount == 1 and cursor.lastrowid:
            return {int(ids[0]): int(cursor.lastrowid)}
        statement = self._d.fix(self.att.last_seqs.fill(ids=placeholders(len(ids))))
        return {int(task_id): int(seq) for task_id, seq in self._execute(statement, ids).fetchall()}

    def _trim(self, last_seqs: dict[int, int]) -> None:
        """Keep each task's first and last `attempts_kept` entries (the gap in the numbers tells
        how many went); deletes only past twice that many, so nearly always nothing runs."""
        keep = self.attempts_kept
        for task_id, last in last_seqs.items():
            if last > 2 * keep:
                self._execute(self.att.trim, (task_id, keep, last - keep))

    def delete_attempts(self, ids: Sequence[int]) -> None:
        """Delete the entries of tasks ``ids`` (their rows are being deleted in this transaction)."""
        for start in range(0, len(ids), CHUNK):
            chunk = list(ids[start:start + CHUNK])
            self._execute(self._d.fix(self.att.delete_of.fill(ids=placeholders(len(chunk)))), chunk)

    # -- reading -------------------------------------------------------------------------------
    def attempt_entries(self, task_id: int) -> tuple[list[tuple[Any, ...]], tuple[Any, ...] | None]:
        """A task's logged entries by number, and its row's (attempt, status, lease owner,
        started, finished) read in the same statement; the row is None when the task has none."""
        with self._log_required():
            rows = self._execute(self.att.entries, (task_id, task_id)).fetchall()
        logged = sorted((tuple(row) for row in rows if row[0] is not None), key=lambda row: int(row[0]))
        current = next((tuple(row[1:6]) for row in rows if row[0] is None), None)
        return logged, current

    @contextlib.contextmanager
    def _log_required(self) -> Iterator[None]:
        """A missing log table (a database not migrated since the log came), or task table, as
        `SchemaError`, at no cost to a statement that succeeds."""
        try:
            yield
        except peewee.DatabaseError as exc:
            if is_missing_table(exc, self.att.table):
                raise SchemaError(f"task table {self.table!r} has no attempt log table {self.att.table!r} yet: "
                                  "run `gta migrate`") from exc
            if is_missing_table(exc, self.table):
                raise SchemaError(f"task table {self.table!r} is missing: run `gta migrate`") from exc
            raise
