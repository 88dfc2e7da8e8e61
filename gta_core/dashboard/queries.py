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
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import peewee

from ..attempts import Attempt, timeline
from ..db.connect import dialect_of, open_database, utc_text
from ..errors import SchemaError
from ..limits import LimitState, limit_states
from ..store.operations import QueueControl
from ..store.roster import SupervisorState, supervisors
from ..store.rows import placeholders
from ..store.sql.dialects import DIALECTS, Dialect
from ..store.sql.statements import ALL_COLUMNS
from ..store.sql.workflows import workflow_statements
from ..store.task_store import PendingGroup, TaskStore, parse_timestamp

T = TypeVar("T")

READ_TIMEOUT = 5.0  # seconds a dashboard statement may run
SOCKET_GRACE = 5.0
PAGE = 50
PREVIEW = 200  # characters of args and last_error shown in a list
SHOWN = 200_000  # characters of a task's args, context, last_error and result read for its page
CHILDREN = 100
LIST_COLUMNS = ("id", "key", "queue", "status", "attempts", "max_attempts", "priority", "args", "last_error",
                "run_at", "created_at", "started_at", "finished_at")
_TIMESTAMPS = ("run_at", "created_at", "started_at", "finished_at")
RUNNING_SHOWN = 500  # running tasks on the workers page
MEMBERS_SHOWN = 500  # members on a group's page
CHAIN_STEPS = 100  # links followed each way from a chain's page
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
    args: str | None = None  # text contained in the arguments' JSON text (see `args_fragment`)
    since: dt.datetime | None = None  # created_at >= since
    until: dt.datetime | None = None  # created_at < until


@dataclasses.dataclass(frozen=True)
class QueueDepth:
    pending: int = 0
    due: int = 0  # pending tasks whose run_at has come
    running: int = 0
    oldest_due: float | None = None  # seconds the oldest due task has waited
    waiting: int = 0  # group callbacks and chain steps waiting for their group


class Fresh(Generic[T]):
    """A reading shared by every viewer: taken again only when the last one is older than
    ``seconds`` (one reader at a time; the others wait for its result), so ten open pages
    polling every 3 s cost the queries of one."""

    def __init__(self, read: Callable[[], T], seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read
        self.seconds = seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._value: tuple[float, T] | None = None

    def __call__(self) -> T:
        with self._lock:
            if self._value is None or self._clock() - self._value[0] >= self.seconds:
                self._value = (self._clock(), self._read())
            return self._value[1]

    def forget(self) -> None:
        """Read again at the next call (after an action changed what was read)."""
        with self._lock:
            self._value = None


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

    def oldest_due(self, overdue_after: float) -> dict[str, float]:
        """Seconds the oldest due pending task of each queue has waited."""
        ages = {}
        for queue, _, oldest, _, now in self.store.pending_summary(overdue_after):
            if oldest is not None and now is not None:
                ages[queue] = max(0.0, (now - oldest).total_seconds())
        return ages

    def _minute(self) -> str:
        """``finished_at`` as ``YYYY-MM-DD HH:MM`` (UTC) in SQL."""
        return f"SUBSTR(CAST(finished_at AS {'CHAR' if self.dialect_name == 'mysql' else 'TEXT'}), 1, 16)"

    def finished_counts(self, since: dt.datetime, until: dt.datetime) -> list[tuple[str, str, str, int]]:
        """(minute, queue, status, count) of tasks finished in (since, until], on the finished index."""
        minute = self._minute()
        rows = self._rows(f"SELECT {minute}, queue, status, COUNT(*) FROM {self.table} "
                          f"WHERE finished_at > ? AND finished_at <= ? GROUP BY {minute}, queue, status",
                          (self._moment(since), self._moment(until)))
        return [(str(bucket), str(queue), str(status), int(count)) for bucket, queue, status, count in rows]

    def wait_samples(self, since: dt.datetime, until: dt.datetime, limit: int) -> list[tuple[str, str, float]]:
        """(minute finished, queue, seconds from due to leased) of at most ``limit`` tasks that
        finished in (since, until] after running, the latest first."""
        rows = self._rows(f"SELECT {self._minute()}, queue, started_at, run_at FROM {self.table} "
                          "WHERE finished_at > ? AND finished_at <= ? AND started_at IS NOT NULL "
                          "ORDER BY finished_at DESC LIMIT ?", (self._moment(since), self._moment(until), limit))
        samples = []
        for bucket, queue, started, due in rows:
            started_at, due_at = parse_timestamp(started), parse_timestamp(due)
            if started_at is not None and due_at is not None:
                samples.append((str(bucket), str(queue), max(0.0, (started_at - due_at).total_seconds())))
        return samples

    # -- queues -------------------------------------------------------------------------------
    def pending_groups(self) -> list[PendingGroup]:
        """The pending rows by queue and task key: how many, how many are due, the oldest due
        one's ``run_at`` (the lease index: pending rows only)."""
        return self.store.pending_by_key(0.0)

    def queue_depth(self, groups: Sequence[PendingGroup] | None = None) -> dict[str, QueueDepth]:
        """Each queue with pending, waiting or running tasks: how many, how many are due, and how
        long the oldest due one has waited; from ``groups`` (`pending_groups`, read when None),
        then the running and waiting rows' indexes."""
        depth: dict[str, QueueDepth] = {}
        for group in self.pending_groups() if groups is None else groups:
            known = depth.get(group.queue, QueueDepth())
            waited = (max(0.0, (group.now - group.oldest_due).total_seconds())
                      if group.oldest_due is not None and group.now is not None else None)
            oldest = known.oldest_due if waited is None else max(waited, known.oldest_due or 0.0)
            depth[group.queue] = dataclasses.replace(known, pending=known.pending + group.pending,
                                                     due=known.due + group.due, oldest_due=oldest)
        for queue, running in self._rows(f"SELECT queue, COUNT(*) FROM {self.table} WHERE status = 'running' "
                                         "GROUP BY queue"):
            depth[str(queue)] = dataclasses.replace(depth.get(str(queue), QueueDepth()), running=int(running))
        for queue, waiting in self.store.waiting_summary().items():
            depth[queue] = dataclasses.replace(depth.get(queue, QueueDepth()), waiting=waiting)
        return depth

    def supervisors(self) -> list[SupervisorState]:
        """Every supervisor in the roster (one row each, live or just gone), by name."""
        return supervisors(self.store)

    def queue_controls(self) -> list[QueueControl]:
        """Every queue ever paused or resumed (the queues table: one row per such queue)."""
        return self.store.queue_controls()

    def limits(self) -> list[LimitState]:
        """Every limit (the limits table: one row per limit)."""
        return limit_states(self.store)

    def periodic_runs(self, dedupe_keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The rows of periodic slots by dedupe key (id, status, created, started, finished), on
        the dedupe key's unique index."""
        if not dedupe_keys:
            return {}
        rows = self._rows(f"SELECT dedupe_key, id, status, created_at, started_at, finished_at FROM {self.table} "
                          f"WHERE dedupe_key IN ({placeholders(len(dedupe_keys))})", dedupe_keys)
        return {str(key): {"id": int(task_id), "status": str(status), "created_at": parse_timestamp(created),
                           "started_at": parse_timestamp(started), "finished_at": parse_timestamp(finished)}
                for key, task_id, status, created, started, finished in rows}

    # -- workers ------------------------------------------------------------------------------
    def running_tasks(self, limit: int = RUNNING_SHOWN) -> list[dict[str, Any]]:
        """Up to ``limit`` running tasks by lease owner, on the owner index (running rows only)."""
        columns = ("id", "key", "queue", "attempts", "max_attempts", "started_at", "lease_expires_at", "lease_owner")
        rows = self._rows(f"SELECT {', '.join(self.d.q(c) if c == 'key' else c for c in columns)} FROM {self.table} "
                          "WHERE status = 'running' ORDER BY lease_owner, id LIMIT ?", (limit,))
        tasks = [dict(zip(columns, row, strict=True)) for row in rows]
        for task in tasks:
            task["started_at"] = parse_timestamp(task["started_at"])
            task["lease_expires_at"] = parse_timestamp(task["lease_expires_at"])
        return tasks

    # -- groups and chains ----------------------------------------------------------------------
    def group(self, group_id: int) -> dict[str, Any] | None:
        """A row of the groups table (kind, total, remaining, callback_id, created_at, finished_at)."""
        columns = ("id", "kind", "total", "remaining", "callback_id", "created_at", "finished_at")
        rows = self._rows(f"SELECT {', '.join(columns)} FROM {self._groups} WHERE id = ?", (group_id,))
        if not rows:
            return None
        group = dict(zip(columns, rows[0], strict=True))
        group["created_at"] = parse_timestamp(group["created_at"])
        group["finished_at"] = parse_timestamp(group["finished_at"])
        return group

    def members(self, group_ids: Sequence[int], limit: int = MEMBERS_SHOWN) -> list[dict[str, Any]]:
        """Up to ``limit`` members of the groups ``group_ids`` (id, key, status, attempts,
        max_attempts, finished_at, group_id), by id, on the group index."""
        if not group_ids:
            return []
        columns = ("id", "key", "status", "attempts", "max_attempts", "finished_at", "group_id")
        rows = self._rows(f"SELECT {', '.join(self.d.q(c) if c == 'key' else c for c in columns)} FROM {self.table} "
                          f"WHERE group_id IN ({placeholders(len(group_ids))}) ORDER BY id LIMIT ?",
                          (*group_ids, limit))
        members = [dict(zip(columns, row, strict=True)) for row in rows]
        for member in members:
            member["finished_at"] = parse_timestamp(member["finished_at"])
        return members

    def brief(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """(key, status, group_id) of the tasks ``ids``, by primary key."""
        if not ids:
            return {}
        rows = self._rows(f"SELECT id, {self.d.q('key')}, status, group_id FROM {self.table} "
                          f"WHERE id IN ({placeholders(len(ids))})", ids)
        return {int(task_id): {"key": str(key), "status": str(status), "group_id": group_id}
                for task_id, key, status, group_id in rows}

    def group_waiting_for(self, callback_id: int) -> int | None:
        """The group whose callback is task ``callback_id`` (a chain's previous link). The groups
        table has no index on callback_id: this reads it whole, which stays small (finished
        groups are deleted with the retention)."""
        rows = self._rows(f"SELECT id FROM {self._groups} WHERE callback_id = ? ORDER BY id LIMIT 1", (callback_id,))
        return int(rows[0][0]) if rows else None

    @property
    def _groups(self) -> str:
        return workflow_statements(self.dialect_name, self.table).groups_table

    # -- lists ---------------------------------------------------------------------------------
    def _where(self, filters: Filters, before: int | None) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("status", filters.status), ("queue", filters.queue), (self.d.q("key"), filters.key)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        for column, text in (("last_error", filters.error), ("args", filters.args)):
            if text is not None:
                clauses.append(f"{column} LIKE ? ESCAPE '!'")
                params.append(f"%{_like_escaped(text)}%")
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
        return self._listed(self._rows(*self.page_statement(filters, before, limit)))

    @staticmethod
    def _listed(rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        tasks = [dict(zip(LIST_COLUMNS, row, strict=True)) for row in rows]
        for task in tasks:
            for column in _TIMESTAMPS:
                task[column] = parse_timestamp(task[column])
        return tasks

    def page_statement(self, filters: Filters, before: int | None, limit: int) -> tuple[str, list[Any]]:
        """`page`'s statement (``?`` placeholders) and parameters: tests EXPLAIN it."""
        where, params = self._where(filters, before)
        return f"SELECT {self._list_columns} FROM {self.table}{where} ORDER BY id DESC LIMIT ?", [*params, limit]

    @property
    def _list_columns(self) -> str:
        return ", ".join(f"SUBSTR({column}, 1, {PREVIEW + 1})" if column in ("args", "last_error")
                         else self.d.q(column) if column == "key" else column for column in LIST_COLUMNS)

    def matching_ids(self, filters: Filters, statuses: Sequence[str], before: int | None, limit: int) -> list[int]:
        """Ids of tasks matching ``filters`` whose status is one of ``statuses``, below
        ``before``, newest first (the batches of a bulk action)."""
        where, params = self._where(filters, before)
        wanted = f"status IN ({placeholders(len(statuses))})"
        where = f"{where} AND {wanted}" if where else f" WHERE {wanted}"
        return [int(row[0]) for row in self._rows(f"SELECT id FROM {self.table}{where} ORDER BY id DESC LIMIT ?",
                                                  (*params, *statuses, limit))]

    def count_matching(self, filters: Filters, statuses: Sequence[str], cap: int) -> int:
        """How many tasks `matching_ids` would give, counted up to ``cap`` (the walk stops there)."""
        where, params = self._where(filters, None)
        wanted = f"status IN ({placeholders(len(statuses))})"
        where = f"{where} AND {wanted}" if where else f" WHERE {wanted}"
        return int(self._rows(f"SELECT COUNT(*) FROM (SELECT id FROM {self.table}{where} ORDER BY id DESC LIMIT ?) "
                              "matching", (*params, *statuses, cap))[0][0])

    def rows(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        """The list's columns of the tasks ``ids`` (a live update of the rows on screen), newest first."""
        if not ids:
            return []
        return self._listed(self._rows(f"SELECT {self._list_columns} FROM {self.table} "
                                       f"WHERE id IN ({placeholders(len(ids))}) ORDER BY id DESC", ids))

    def newer(self, filters: Filters, top: int, span: int) -> int | None:
        """How many tasks above id ``top`` match ``filters``, looking at the next ``span`` ids
        at most: None when the newest id is further than that (too many to count cheaply)."""
        newest = self._rows(f"SELECT MAX(id) FROM {self.table}")[0][0]
        if newest is None or int(newest) <= top:
            return 0
        if int(newest) - top > span:
            return None
        where, params = self._where(filters, None)
        above = "id > ?"
        where = f"{where} AND {above}" if where else f" WHERE {above}"
        return int(self._rows(f"SELECT COUNT(*) FROM {self.table}{where}", (*params, top))[0][0])

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

    def attempts(self, task_id: int) -> list[Attempt] | None:
        """The task's attempts and operator actions, oldest first; None where the table has no
        attempt log (a table `gta migrate` has not upgraded yet)."""
        try:
            logged, current = self.store.attempt_entries(task_id)
        except SchemaError:
            return None
        return timeline(task_id, logged, current) if current is not None else []

    def children(self, task_id: int, limit: int = CHILDREN) -> list[tuple[int, str, str]]:
        """(id, key, status) of the tasks ``task_id`` submitted, on the parent_id index."""
        rows = self._rows(f"SELECT id, {self.d.q('key')}, status FROM {self.table} WHERE parent_id = ? "
                          "ORDER BY id LIMIT ?", (task_id, limit))
        return [(int(row[0]), str(row[1]), str(row[2])) for row in rows]


def _like_escaped(text: str) -> str:
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def _timed_out(exc: BaseException) -> bool:
    """The statement was cut by its time bound (any of the three databases)."""
    text = str(exc).lower()
    return any(sign in text for sign in ("statement timeout", "interrupted", "max_statement_time",
                                         "maximum statement execution time", "max_execution_time",
                                         "query execution was interrupted", "timed out"))
