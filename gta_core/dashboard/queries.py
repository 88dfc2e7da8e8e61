"""The dashboard's read queries: one named method per page part, each bounded in time.

They run on a Database of their own, one connection per page (closed at its end), so a page
never shares a connection with the sidecar's metrics thread. Every statement is bounded:
PostgreSQL by the connection's ``statement_timeout`` (set at connect by `open_database`),
MariaDB by ``max_statement_time`` and MySQL by ``max_execution_time`` (set on each connection),
SQLite by a progress handler that interrupts a statement past its deadline. A page whose query
runs out of time answers 503 with what to narrow; ``/metrics`` and ``/healthz`` are served on
other threads and keep answering meanwhile.

Lists are keyset-paged on the primary key, newest first (``id < ?  ORDER BY id DESC``), so a
page costs the same on the first or the ten-thousandth page. Wide columns are cut in SQL
(`PREVIEW`) so a huge ``args`` never leaves the database for a list.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import time
from collections.abc import Iterator, Sequence
from typing import Any

import peewee

from ..attempts import Attempt, timeline
from ..database import dialect_of, open_database, utc_text
from ..dialects import DIALECTS, Dialect
from ..roster import Unhandled, supervisors, unhandled
from ..sql import ALL_COLUMNS
from ..store import TaskStore, parse_timestamp, summarize_by_queue

READ_TIMEOUT = 5.0  # seconds a dashboard statement may run
SOCKET_GRACE = 5.0
PAGE = 50
PREVIEW = 200  # characters of args and last_error shown in a list
SHOWN = 200_000  # characters of a task's args, context, last_error and result read for its page
CHILDREN = 100
LIST_COLUMNS = ("id", "key", "queue", "status", "attempts", "max_attempts", "priority", "args", "last_error",
                "run_at", "created_at", "finished_at")
_TIMESTAMPS = ("run_at", "created_at", "finished_at")
_WIDE = ("args", "context", "last_error", "result")


class Clipped(str):
    """A wide column's text as read for a page: cut in SQL at `SHOWN` characters; ``length``
    is the whole value's."""

    length: int


@dataclasses.dataclass(frozen=True)
class Filters:
    """What the task list is narrowed to; None leaves a field out."""

    status: str | None = None
    queue: str | None = None
    key: str | None = None
    error: str | None = None  # text contained in last_error
    since: dt.datetime | None = None  # created_at >= since
    until: dt.datetime | None = None  # created_at < until


class ReadTimeout(Exception):
    """A dashboard query ran past `READ_TIMEOUT`."""


class DashboardReads:
    """Read queries on one task table, through a Database used by nothing else."""

    def __init__(self, database_url: str, table: str, timeout: float = READ_TIMEOUT) -> None:
        # MySQL/MariaDB: the socket's read timeout only catches a server that stopped answering;
        # the server's own limit (set in `_bound`) must cut the statement first.
        socket_grace = SOCKET_GRACE if database_url.split(":", 1)[0] in ("mysql", "mariadb") else 0.0
        self.db = open_database(database_url, statement_timeout=timeout + socket_grace)
        self.timeout = timeout
        self.table = table
        self.dialect_name = dialect_of(self.db)
        self.d: Dialect = DIALECTS[self.dialect_name]
        self.store = TaskStore(self.db, table)
        self._deadline = 0.0

    # -- one connection per page ------------------------------------------------------------
    @contextlib.contextmanager
    def session(self) -> Iterator[DashboardReads]:
        """A connection for one page, bounded as the module says, closed afterwards."""
        self.db.connect(reuse_if_open=True)
        try:
            self._bound(self.db.connection())
            yield self
        except peewee.DatabaseError as exc:
            if _timed_out(exc):
                raise ReadTimeout(f"a query ran longer than {self.timeout:g}s") from exc
            raise
        finally:
            self.db.close()

    def _bound(self, connection: Any) -> None:
        if self.dialect_name == "sqlite":
            deadline = time.monotonic() + self.timeout
            connection.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        elif self.dialect_name == "mysql":
            try:  # MariaDB: seconds; MySQL: milliseconds (SELECT only)
                self.db.execute_sql(f"SET SESSION max_statement_time = {self.timeout:g}")
            except peewee.DatabaseError:
                self.db.execute_sql(f"SET SESSION max_execution_time = {int(self.timeout * 1000)}")

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self.db.execute_sql(self.d.fix(sql), tuple(params)).fetchall())

    def _moment(self, moment: dt.datetime) -> Any:
        naive = moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return utc_text(naive) if self.dialect_name == "sqlite" else naive

    # -- overview ----------------------------------------------------------------------------
    def now(self) -> dt.datetime:
        moment = parse_timestamp(self._rows(f"SELECT {self.d.now}")[0][0])
        assert moment is not None
        return moment

    def counts(self) -> dict[tuple[str, str], int]:
        return self.store.counts()

    def pending(self, overdue_after: float) -> tuple[dict[str, float], list[Unhandled]]:
        """Seconds the oldest due pending task of each queue has waited, and the due tasks that
        no live supervisor handles (one read of the pending rows, and the roster)."""
        groups = self.store.pending_by_key(overdue_after)
        ages = {}
        for queue, _, oldest, _, now in summarize_by_queue(groups):
            if oldest is not None and now is not None:
                ages[queue] = max(0.0, (now - oldest).total_seconds())
        return ages, unhandled(groups, supervisors(self.store))

    def finished_per_minute(self, minutes: int) -> list[tuple[str, str, int]]:
        """(minute 'YYYY-MM-DD HH:MM' UTC, status, count) of tasks finished in the last
        ``minutes`` (database clock), read on the finished_at index."""
        text = "CHAR" if self.dialect_name == "mysql" else "TEXT"
        minute = f"SUBSTR(CAST(finished_at AS {text}), 1, 16)"
        rows = self._rows(f"SELECT {minute}, status, COUNT(*) FROM {self.table} "
                          f"WHERE finished_at >= {self.d.now_plus()} GROUP BY {minute}, status",
                          (self.d.seconds_param(-60.0 * minutes),))
        return [(str(bucket), status, int(count)) for bucket, status, count in rows]

    def running_by_owner(self) -> dict[str, int]:
        """Running tasks by lease owner (``host:pid.slot:…``), on the running rows' index."""
        rows = self._rows(f"SELECT lease_owner, COUNT(*) FROM {self.table} WHERE status = 'running' "
                          "GROUP BY lease_owner")
        return {str(owner): int(count) for owner, count in rows}

    # -- lists ---------------------------------------------------------------------------------
    def _where(self, filters: Filters, before: int | None) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("status", filters.status), ("queue", filters.queue), (self.d.q("key"), filters.key)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if filters.error is not None:
            clauses.append("last_error LIKE ? ESCAPE '!'")
            escaped = filters.error.replace("!", "!!").replace("%", "!%").replace("_", "!_")
            params.append(f"%{escaped}%")
        if filters.since is not None:
            clauses.append("created_at >= ?")
            params.append(self._moment(filters.since))
        if filters.until is not None:
            clauses.append("created_at < ?")
            params.append(self._moment(filters.until))
        if before is not None:
            clauses.append("id < ?")
            params.append(before)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def page(self, filters: Filters, before: int | None = None, limit: int = PAGE) -> list[dict[str, Any]]:
        """Up to ``limit`` tasks matching ``filters`` with an id below ``before``, newest first;
        args and last_error cut to `PREVIEW` + 1 characters (one more tells a cut happened)."""
        rows = self._rows(*self.page_statement(filters, before, limit))
        tasks = [dict(zip(LIST_COLUMNS, row, strict=True)) for row in rows]
        for task in tasks:
            for column in _TIMESTAMPS:
                task[column] = parse_timestamp(task[column])
        return tasks

    def page_statement(self, filters: Filters, before: int | None, limit: int) -> tuple[str, list[Any]]:
        """`page`'s statement (``?`` placeholders) and parameters: tests EXPLAIN it."""
        where, params = self._where(filters, before)
        columns = ", ".join(f"SUBSTR({column}, 1, {PREVIEW + 1})" if column in ("args", "last_error")
                            else self.d.q(column) if column == "key" else column for column in LIST_COLUMNS)
        return f"SELECT {columns} FROM {self.table}{where} ORDER BY id DESC LIMIT ?", [*params, limit]

    def retryable_ids(self, filters: Filters, before: int | None, limit: int) -> list[int]:
        """Ids of failed or cancelled tasks matching ``filters`` below ``before``, newest first
        (the batches of a bulk retry)."""
        where, params = self._where(filters, before)
        retryable = "status IN ('failed', 'cancelled')"
        where = f"{where} AND {retryable}" if where else f" WHERE {retryable}"
        return [int(row[0]) for row in self._rows(f"SELECT id FROM {self.table}{where} ORDER BY id DESC LIMIT ?",
                                                  (*params, limit))]

    # -- one task ------------------------------------------------------------------------------
    def task(self, task_id: int) -> dict[str, Any] | None:
        """Every column of one task, the wide ones `Clipped` in SQL (a 30 MB argument never
        leaves the database whole for a page), or None when no row has that id."""
        length = "CHAR_LENGTH" if self.dialect_name == "mysql" else "LENGTH"
        columns = [f"SUBSTR({column}, 1, {SHOWN + 1})" if column in _WIDE else self.d.q(column) if column == "key"
                   else column for column in ALL_COLUMNS]
        rows = self._rows(f"SELECT {', '.join(columns)}, {', '.join(f'{length}({c})' for c in _WIDE)} "
                          f"FROM {self.table} WHERE id = ?", (task_id,))
        if not rows:
            return None
        task = dict(zip(ALL_COLUMNS, rows[0][:len(ALL_COLUMNS)], strict=True))
        for column, full in zip(_WIDE, rows[0][len(ALL_COLUMNS):], strict=True):
            if task[column] is not None:
                task[column] = Clipped(task[column])
                task[column].length = int(full)
        for column in ("run_at", "lease_expires_at", "created_at", "updated_at", "started_at", "finished_at"):
            task[column] = parse_timestamp(task[column])
        return task

    def attempts(self, task_id: int) -> list[Attempt]:
        """The task's attempts and operator actions, oldest first (at most twice ``attempts_kept``
        logged entries, and the row's)."""
        logged, current = self.store.attempt_entries(task_id)
        return timeline(task_id, logged, current) if current is not None else []

    def children(self, task_id: int, limit: int = CHILDREN) -> list[tuple[int, str, str]]:
        """(id, key, status) of the tasks ``task_id`` submitted, on the parent_id index."""
        rows = self._rows(f"SELECT id, {self.d.q('key')}, status FROM {self.table} WHERE parent_id = ? "
                          "ORDER BY id LIMIT ?", (task_id, limit))
        return [(int(row[0]), str(row[1]), str(row[2])) for row in rows]


def _timed_out(exc: BaseException) -> bool:
    """The statement was cut by its time bound (any of the three databases)."""
    text = str(exc).lower()
    return any(sign in text for sign in ("statement timeout", "interrupted", "max_statement_time",
                                         "maximum statement execution time", "max_execution_time",
                                         "query execution was interrupted", "timed out"))
