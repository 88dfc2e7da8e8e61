"""Global limits' queries, mixed into `TaskStore`: the limit rows (`gta limit`, the supervisors'
task limits) and the lease under limits (`lease_limited`).

A lease under limits is one transaction: lock the limit rows that concern the worker's queues
(all task limits, and its queues' limits) in (kind, name) order, count the running tasks with
unexpired leases under them, then take due rows in the lease order while every limit a row is
under has room (a concurrency slot, of its ``concurrency_key`` when per key, and rate budget in
the current fixed window), and lease them. Leasers that could exceed a limit together take
turns on its row; leasers of unlimited work never wait on it (`lease_unlimited`).
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

import peewee

from ..db.driver_errors import is_missing_table
from ..db.transactions import in_statement, in_transaction
from .base import StoreBase
from .rows import parse_timestamp, placeholders
from .sql.limits import LimitStatements, limit_statements

#: how long (seconds) a process trusts its last look at whether any limit exists: a new limit
#: binds every worker within this long, and a worker without limits pays one tiny query per period
RECHECK = 1.0
#: rounds of candidates one lease looks at, each past the rows the last one could not take
#: (a key at its cap ahead of others with room)
ROUNDS = 4


@dataclasses.dataclass
class Limit:
    """One locked limit row and what the lease at hand has used of it."""

    kind: str
    name: str
    concurrency: int | None
    rate_count: int | None
    rate_period: int | None
    per_key: bool
    window_start: int | None
    window_count: int
    running: int = 0
    running_by_key: dict[str | None, int] = dataclasses.field(default_factory=dict)
    window_moved: bool = False

    @property
    def column(self) -> str:
        """The task table's column this limit's scope matches."""
        return "key" if self.kind == "task" else "queue"

    def start_window(self, now: float) -> None:
        """Move to the fixed window holding ``now`` (epoch seconds) if the row's is older."""
        if self.rate_count is None or not self.rate_period:
            return
        start = int(math.floor(now / self.rate_period)) * self.rate_period
        if self.window_start != start:
            self.window_start, self.window_count, self.window_moved = start, 0, True

    def full(self) -> bool:
        """No task under this limit can start now (whatever its key)."""
        if self.rate_count is not None and self.window_count >= self.rate_count:
            return True
        return not self.per_key and self.concurrency is not None and self.running >= self.concurrency

    def full_keys(self) -> list[str | None]:
        """The concurrency keys at their cap (per-key limits only)."""
        if not self.per_key or self.concurrency is None:
            return []
        return [key for key, count in self.running_by_key.items() if count >= self.concurrency]

    def room_for(self, key: str | None) -> bool:
        if self.full():
            return False
        return not self.per_key or self.concurrency is None or self.running_by_key.get(key, 0) < self.concurrency

    def take(self, key: str | None) -> None:
        self.running += 1
        self.running_by_key[key] = self.running_by_key.get(key, 0) + 1
        if self.rate_count is not None:
            self.window_count += 1
            self.window_moved = True


class LimitQueries(StoreBase):
    """What limits ask of the database."""

    _limits_seen: tuple[float, bool] = (-math.inf, False)

    @property
    def lim(self) -> LimitStatements:
        return limit_statements(self.dialect, self.table)

    # -- the limit rows ------------------------------------------------------------------
    def limit_rows(self) -> list[tuple[Any, ...]]:
        """Every limit row (`store.sql.limits.LIMIT_COLUMNS`), by kind and name."""
        return [tuple(row) for row in self._execute(self.lim.rows).fetchall()]

    def set_limit(self, kind: str, name: str, concurrency: int | None, rate: tuple[int, int] | None,
                  per_key: bool) -> None:
        """Create or change one limit (its current rate window is kept)."""
        count, period = rate if rate is not None else (None, None)
        self._write(self.lim.upsert, (kind, name, concurrency, count, period, per_key))
        self.forget_limits()

    def clear_limit(self, kind: str, name: str) -> bool:
        """Remove one limit; whether there was one."""
        removed = self._write(self.lim.delete, (kind, name)) > 0
        self.forget_limits()
        return removed

    def sync_task_limits(self, limited: Iterable[tuple[str, int | None, tuple[int, int] | None, bool]],
                         unlimited: Sequence[str]) -> None:
        """A starting supervisor's handlers: write the limits of ``limited`` (key, concurrency,
        (count, period) or None, per key), and remove any of the ``unlimited`` keys, which this
        supervisor's code declares without limits. The latest supervisor to start decides."""
        lim = self.lim

        # one pass in key order, as leases lock the rows: a start never deadlocks with a lease or
        # another start (and only the rows that exist are deleted: one statement per row)
        present = {name for kind, name, *_ in self.limit_rows() if kind == "task"}
        writes = sorted([(key, (key, concurrency, rate, per_key)) for key, concurrency, rate, per_key in limited]
                        + [(key, None) for key in unlimited if key in present], key=lambda item: item[0])

        def write() -> None:
            for key, limit in writes:
                if limit is None:
                    self._execute(lim.delete, ("task", key))
                    continue
                _, concurrency, rate, per_key = limit
                count, period = rate if rate is not None else (None, None)
                self._execute(lim.upsert, ("task", key, concurrency, count, period, per_key))
        if writes:
            in_transaction(self.db, write)
        self.forget_limits()

    def forget_limits(self) -> None:
        """Look again at once whether limits exist (this process just changed them)."""
        self._limits_seen = (-math.inf, False)

    def limits_exist(self) -> bool:
        """Whether the limits table has a row, as seen at most `RECHECK` seconds ago."""
        checked, exist = self._limits_seen
        now = time.monotonic()
        if now - checked < RECHECK:
            return exist
        try:
            exist = in_statement(self.db, lambda: self._execute(self.lim.any_limit).fetchone() is not None)
        except peewee.DatabaseError as exc:  # a table migrated by an older GTA: no limits to obey
            if not is_missing_table(exc, self.lim.table):
                raise
            exist = False
        self._limits_seen = (now, exist)
        return exist

    # -- leasing under limits ------------------------------------------------------------
    def lease_limited(self, owner: str, queues: Sequence[str], want: int, lease_timeout: float,
                      keys: Sequence[str] | None = None) -> tuple[float, list[Any]]:
        """Lease up to ``want`` due rows of ``queues`` (rows of `Statements.lease_columns`), of
        the task ``keys`` when given, obeying every limit: first the limited rows in a
        transaction holding their limit rows, then unlimited rows for the rest, as the plain
        lease does but for the limited keys and queues. Also returns when (monotonic) the first
        statement that set some of these leases was sent (`store.task_store.Leased.sent`)."""
        limited: list[Any] = []
        scoped: tuple[list[str], list[str]] = ([], [])
        sent = math.inf

        def under_limits() -> None:
            nonlocal limited, scoped, sent
            sent, limited, scoped = self._lease_under_limits(owner, queues, want, lease_timeout, keys)
        in_transaction(self.db, under_limits)
        if len(limited) < want:
            rest_sent, rest = self._lease_unlimited(owner, queues, want - len(limited), lease_timeout, keys, *scoped)
            if rest:
                limited, sent = limited + rest, min(sent, rest_sent)
        return (sent if limited else time.monotonic()), limited

    def _lease_under_limits(self, owner: str, queues: Sequence[str], want: int, lease_timeout: float,
                            keys: Sequence[str] | None) -> tuple[float, list[Any], tuple[list[str], list[str]]]:
        lim, fix = self.lim, self._d.fix
        rows = self._execute(fix(lim.lock.fill(queues=placeholders(len(queues)))), queues).fetchall()
        if not rows:
            return math.inf, [], ([], [])
        now = parse_timestamp(rows[0][-1])
        assert now is not None
        limits = [Limit(kind, name, concurrency, count, period, bool(per_key), window_start, window_count or 0)
                  for kind, name, concurrency, count, period, per_key, window_start, window_count, _ in rows]
        for limit in limits:
            limit.start_window(now.timestamp())
        scopes = ([limit.name for limit in limits if limit.kind == "task"],
                  [limit.name for limit in limits if limit.kind == "queue"])
        self._count_running(limits, scopes)
        chosen: list[int] = []
        for _ in range(ROUNDS):
            room = want - len(chosen)
            open_limits = [limit for limit in limits if not limit.full()]
            if room <= 0 or not open_limits:
                break
            statement, params = self._candidates(queues, keys, limits, open_limits, chosen, room)
            found = self._execute(statement, params).fetchall()
            for task_id, key, queue, concurrency_key in found:
                under = [limit for limit in limits if (key if limit.kind == "task" else queue) == limit.name]
                if all(limit.room_for(concurrency_key) for limit in under):
                    for limit in under:
                        limit.take(concurrency_key)
                    chosen.append(task_id)
                    if len(chosen) == want:
                        break
            if len(found) < room:
                break
        for limit in limits:
            if limit.window_moved:
                self._execute(lim.set_window, (limit.window_start, limit.window_count, limit.kind, limit.name))
        if not chosen:
            return math.inf, [], scopes
        ids = placeholders(len(chosen))
        lease_params = (owner, self._secs(lease_timeout), *chosen)
        sent = time.monotonic()
        if self.dialect == "mysql":
            self._execute(fix(lim.lease_ids.fill(ids=ids)), lease_params)
            return sent, list(self._execute(fix(lim.leased_rows.fill(ids=ids)), chosen).fetchall()), scopes
        return sent, list(self._execute(fix(lim.lease_ids_returning.fill(ids=ids)), lease_params).fetchall()), scopes

    def _count_running(self, limits: list[Limit], scopes: tuple[list[str], list[str]]) -> None:
        scope, params = _scope(self._d.q("key"), *scopes)
        rows = self._execute(self._d.fix(self.lim.running.fill(scope=scope)), params).fetchall()
        for key, queue, concurrency_key, count in rows:
            for limit in limits:
                if (key if limit.kind == "task" else queue) == limit.name:
                    limit.running += count
                    limit.running_by_key[concurrency_key] = limit.running_by_key.get(concurrency_key, 0) + count

    def _candidates(self, queues: Sequence[str], known: Sequence[str] | None, limits: list[Limit],
                    open_limits: list[Limit], chosen: list[int], room: int) -> tuple[str, list[Any]]:
        """Due rows (of the task keys ``known``, when given) under a limit with room, none under
        a full one nor of a full concurrency key, not chosen yet."""
        k = self._d.q("key")
        scope, params = _scope(k, [limit.name for limit in open_limits if limit.kind == "task"],
                               [limit.name for limit in open_limits if limit.kind == "queue"])
        full: list[str] = []
        full_params: list[Any] = []
        for limit in limits:
            column = k if limit.kind == "task" else "queue"
            if limit.full():
                full.append(f" AND {column} <> ?")
                full_params.append(limit.name)
                continue
            keys = [key for key in limit.full_keys() if key is not None]
            if keys:
                full.append(f" AND NOT ({column} = ? AND concurrency_key IS NOT NULL "
                            f"AND concurrency_key IN ({placeholders(len(keys))}))")
                full_params += [limit.name, *keys]
            if None in limit.full_keys():
                full.append(f" AND NOT ({column} = ? AND concurrency_key IS NULL)")
                full_params.append(limit.name)
        if chosen:
            full.append(f" AND id NOT IN ({placeholders(len(chosen))})")
            full_params += chosen
        key_marks, key_params = self.sql.known_keys(known) if known is not None else ("", ())
        statement = self.lim.candidates.fill(queues=placeholders(len(queues)), keys=key_marks, scope=scope,
                                               full="".join(full))
        return self._d.fix(statement), [*queues, *key_params, *params, *full_params, room]

    def _lease_unlimited(self, owner: str, queues: Sequence[str], want: int, lease_timeout: float,
                         keys: Sequence[str] | None, task_keys: list[str],
                         limited_queues: list[str]) -> tuple[float, list[Any]]:
        """The plain lease minus the rows of ``task_keys`` and ``limited_queues``, and when its
        lease statement was sent (`store.task_store.Leased.sent`).

        The limited queues are left out of the queue list (not filtered with NOT IN, which would
        walk their pending rows in the lease index); so are the limited task keys from a worker's
        list of ``keys`` (without one, the rows of limited task keys are filtered out, so a queue
        whose due rows are mostly a limited task's is walked past them)."""
        lim, fix, k = self.lim, self._d.fix, self._d.q("key")
        queues = [queue for queue in queues if queue not in limited_queues]
        if keys is not None:
            keys = [key for key in keys if key not in task_keys]
        if not queues or keys == []:
            return time.monotonic(), []
        unlimited = f" AND {k} NOT IN ({placeholders(len(task_keys))})" if task_keys and keys is None else ""
        key_marks, key_params = self.sql.known_keys(keys) if keys is not None else ("", tuple(task_keys))
        marks = placeholders(len(queues))
        lease_params = (owner, self._secs(lease_timeout))
        select_params = (*queues, *key_params, want)
        if self.dialect == "mysql":
            def lease_mysql() -> tuple[float, list[Any]]:
                select = fix(lim.unlimited_ids.fill(queues=marks, keys=key_marks, unlimited=unlimited))
                ids = [row[0] for row in self._execute(select, select_params).fetchall()]
                sent = time.monotonic()
                if not ids:
                    return sent, []
                id_list = placeholders(len(ids))
                self._execute(fix(lim.lease_ids.fill(ids=id_list)), (*lease_params, *ids))
                return sent, list(self._execute(fix(lim.leased_rows.fill(ids=id_list)), ids).fetchall())
            return in_transaction(self.db, lease_mysql)
        statement = fix(lim.lease_unlimited.fill(queues=marks, keys=key_marks, unlimited=unlimited))

        def lease_one() -> tuple[float, list[Any]]:
            sent = self.sending()
            return sent, list(self._execute(statement, (*lease_params, *select_params)).fetchall())
        return in_statement(self.db, lease_one)


def _scope(key: str, task_keys: list[str], queues: list[str]) -> tuple[str, list[str]]:
    """The condition matching rows under these task keys or queues, and its parameters
    (``key``: the key column, quoted for the dialect)."""
    parts = []
    if task_keys:
        parts.append(f"{key} IN ({placeholders(len(task_keys))})")
    if queues:
        parts.append(f"queue IN ({placeholders(len(queues))})")
    return " OR ".join(parts) or "1 = 0", [*task_keys, *queues]


__all__ = ["LimitQueries", "RECHECK"]
