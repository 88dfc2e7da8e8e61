"""Global limits: how many tasks of a task key or a queue run at once (optionally per
``concurrency_key``), and how many start per fixed window, across every supervisor sharing the
database.

A limit is a row of ``<table>_limits`` (created by `gta migrate`). Task limits come from
``@task(concurrency=…, concurrency_key=…, rate_limit=…)`` and are written by each supervisor
as it starts (the latest to start decides); queue limits from `limit_queue` / ``gta limit``.
The lease obeys them (`store.limits`): workers never sleep on a limit, a full limit's tasks
simply are not leased. A limit set or cleared binds every worker within a second.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable

from .errors import InvalidLimit
from .handles.api_errors import gta_errors
from .limit_rules import Rate, check_concurrency, parse_rate
from .queues import check_name
from .runtime import Runtime, get_runtime
from .store.rows import parse_timestamp
from .store.sql.limits import LIMIT_COLUMNS
from .store.task_store import TaskStore
from .tasks import TaskDefinition


@dataclasses.dataclass(frozen=True)
class LimitState:
    """One limit as `limits` reads it: its scope (``kind`` 'task' or 'queue', and the task key
    or queue ``name``), ``concurrency`` (per concurrency key when ``per_key``), ``rate_limit``
    (``"N/s|m|h"``), and the current rate window: when it started and how many tasks it started."""

    kind: str
    name: str
    concurrency: int | None
    rate_limit: str | None
    per_key: bool
    window_start: dt.datetime | None
    window_count: int
    changed_at: dt.datetime | None


@gta_errors
def limit_queue(name: str, concurrency: int | None = None, rate_limit: str | Rate | None = None, *,
                per_key: bool = False, runtime: Runtime | None = None) -> LimitState:
    """Limit queue ``name`` cluster-wide: at most ``concurrency`` of its tasks running at once
    (per ``concurrency_key`` value with ``per_key``) and at most ``rate_limit`` starts
    (``"100/m"``); replaces the queue's previous limit. `InvalidLimit` for a bad value."""
    cap, rate = check_queue_limit(name, concurrency, rate_limit, per_key)
    runtime = _ready(runtime)
    runtime.store.set_limit("queue", name, cap, None if rate is None else (rate.count, rate.period), per_key)
    return next(state for state in limits(runtime) if state.kind == "queue" and state.name == name)


def check_queue_limit(name: str, concurrency: int | None, rate_limit: str | Rate | None,
                      per_key: bool) -> tuple[int | None, Rate | None]:
    """A queue limit's values, checked before the database is touched (`limit_queue`, ``gta
    limit``): the cap and the rate, or `InvalidLimit` naming the value and the rule."""
    check_name(name)
    cap = None if concurrency is None else check_concurrency(concurrency)
    rate = None if rate_limit is None else parse_rate(rate_limit)
    if cap is None and rate is None:
        raise InvalidLimit(f"queue {name!r}: give concurrency or rate_limit (unlimit_queue removes a limit)")
    if not isinstance(per_key, bool):
        raise InvalidLimit(f"per_key {per_key!r}: must be True or False")
    if per_key and cap is None:
        raise InvalidLimit(f"queue {name!r}: per_key needs a concurrency (rate limits are never per key)")
    return cap, rate


@gta_errors
def unlimit_queue(name: str, *, runtime: Runtime | None = None) -> bool:
    """Remove queue ``name``'s limit; whether it had one."""
    check_name(name)
    return _ready(runtime).store.clear_limit("queue", name)


@gta_errors
def limits(runtime: Runtime | None = None) -> list[LimitState]:
    """Every limit, task limits first, each kind by name."""
    return limit_states(runtime or get_runtime())


def limit_states(source: Runtime | TaskStore) -> list[LimitState]:
    """`limits` read through a runtime's store or any `TaskStore` (the dashboard's)."""
    store = source.store if isinstance(source, Runtime) else source
    return [_state(dict(zip(LIMIT_COLUMNS, row, strict=True))) for row in store.limit_rows()]


def task_limits(definitions: Iterable[TaskDefinition]) -> tuple[list[tuple[str, int | None, tuple[int, int] | None,
                                                                           bool]], list[str]]:
    """What a supervisor writes for its handlers (`TaskStore.sync_task_limits`): the limits of
    those that declare one, and the keys of those that declare none."""
    limited, unlimited = [], []
    for definition in definitions:
        rate = definition.rate_limit
        if definition.concurrency is None and rate is None:
            unlimited.append(definition.key)
            continue
        per_key = definition.concurrency is not None and definition.concurrency_key is not None
        limited.append((definition.key, definition.concurrency,
                        None if rate is None else (rate.count, rate.period), per_key))
    return limited, unlimited


def _state(row: dict[str, object]) -> LimitState:
    count, period, start = row["rate_count"], row["rate_period"], row["window_start"]
    rate = str(Rate(int(count), int(period))) if isinstance(count, int) and isinstance(period, int) else None
    window = dt.datetime.fromtimestamp(start, dt.timezone.utc) if isinstance(start, int) else None
    return LimitState(str(row["kind"]), str(row["name"]), row["concurrency"],  # type: ignore[arg-type]
                      rate, bool(row["per_key"]), window, int(row["window_count"] or 0),  # type: ignore[call-overload]
                      parse_timestamp(row["changed_at"]))


def _ready(runtime: Runtime | None) -> Runtime:
    runtime = runtime or get_runtime()
    runtime.store.require_schema()
    return runtime


__all__ = ["LimitState", "check_queue_limit", "limit_queue", "limit_states", "limits", "task_limits", "unlimit_queue"]
