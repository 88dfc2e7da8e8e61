"""Small helpers between Python values and rows: placeholder lists, timestamps, row dicts."""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from .sql.statements import ALL_COLUMNS


def placeholders(count: int) -> str:
    """``?, ?, …``: ``count`` placeholders for an IN list."""
    return ", ".join("?" * count)


def parse_timestamp(value: Any) -> dt.datetime | None:
    """Database timestamps as timezone-aware UTC datetimes."""
    if value is None:
        return None
    moment: dt.datetime = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.timezone.utc)



def task_dict(row: Sequence[Any]) -> dict[str, Any]:
    """A row of `ALL_COLUMNS` as a dict, timestamps as aware UTC datetimes (what `TaskStore.get` returns)."""
    task = dict(zip(ALL_COLUMNS, row, strict=True))
    for column in ("run_at", "lease_expires_at", "created_at", "updated_at", "started_at", "finished_at"):
        task[column] = parse_timestamp(task[column])
    return task
