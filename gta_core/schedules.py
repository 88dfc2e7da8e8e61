"""Schedules for periodic tasks: fixed intervals and five-field cron expressions.

A schedule names *slots*: points in time at which its task is due. The periodic scheduler
enqueues the latest slot at or before now with the dedupe key ``periodic:<name>:<slot>``,
so every supervisor may try and each slot still runs once, and after downtime at most one
missed slot is caught up.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping
from typing import Any

UTC = dt.timezone.utc
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
_ALIASES = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
            "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *"}


@dataclasses.dataclass(frozen=True)
class Cron:
    """A parsed cron expression (UTC): minute hour day-of-month month day-of-week."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, expression: str) -> Cron:
        text = _ALIASES.get(expression.strip(), expression.strip())
        parts = text.split()
        if len(parts) != 5:
            raise ValueError(f"cron expression {expression!r} must have 5 fields "
                             "(minute hour day-of-month month day-of-week)")
        sets = [_parse_field(part, name, low, high, expression)
                for part, (name, low, high) in zip(parts, _FIELDS, strict=True)]
        weekdays = frozenset(day % 7 for day in sets[4])
        return cls(expression, sets[0], sets[1], sets[2], sets[3], weekdays, parts[2] == "*", parts[4] == "*")

    def matches(self, moment: dt.datetime) -> bool:
        return (moment.minute in self.minutes and moment.hour in self.hours
                and moment.month in self.months and self._day_matches(moment.date()))

    def _day_matches(self, day: dt.date) -> bool:
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:  # classic cron: restricted fields alone decide
            return in_month and in_week
        return in_month or in_week

    def latest(self, moment: dt.datetime) -> dt.datetime | None:
        """The latest firing time at or before ``moment`` within the last 5 years, or None."""
        candidate = moment.astimezone(UTC).replace(second=0, microsecond=0)
        floor = candidate - dt.timedelta(days=366 * 5)
        while candidate >= floor:
            if candidate.month not in self.months or not self._day_matches(candidate.date()):
                candidate = candidate.replace(hour=0, minute=0) - dt.timedelta(minutes=1)
            elif candidate.hour not in self.hours:
                candidate = candidate.replace(minute=0) - dt.timedelta(minutes=1)
            elif candidate.minute not in self.minutes:
                candidate -= dt.timedelta(minutes=1)
            else:
                return candidate
        return None

    def following(self, moment: dt.datetime) -> dt.datetime | None:
        """The first firing time after ``moment`` within the next 5 years, or None (`latest` run forward)."""
        candidate = moment.astimezone(UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        ceiling = candidate + dt.timedelta(days=366 * 5)
        while candidate <= ceiling:
            if candidate.month not in self.months or not self._day_matches(candidate.date()):
                candidate = candidate.replace(hour=0, minute=0) + dt.timedelta(days=1)
            elif candidate.hour not in self.hours:
                candidate = candidate.replace(minute=0) + dt.timedelta(hours=1)
            elif candidate.minute not in self.minutes:
                candidate += dt.timedelta(minutes=1)
            else:
                return candidate
        return None


def _parse_field(part: str, name: str, low: int, high: int, expression: str) -> frozenset[int]:
    values: set[int] = set()
    for item in part.split(","):
        body, _, step_text = item.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if body == "*":
                start, end = low, high
            elif "-" in body:
                start, end = (int(bound) for bound in body.split("-", 1))
            else:
                start = int(body)
                end = high if step_text else start
        except ValueError:
            raise ValueError(f"cron expression {expression!r}: bad {name} field {part!r}") from None
        if step < 1 or not low <= start <= end <= high:
            raise ValueError(f"cron expression {expression!r}: {name} field {part!r} must lie in {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclasses.dataclass(frozen=True)
class Periodic:
    """A task enqueued on a schedule. Build with `periodic`."""

    name: str
    key: str
    args: Mapping[str, Any]
    every: float | None = None
    cron: Cron | None = None
    queue: str | None = None
    priority: int | None = None

    def latest_slot(self, now: dt.datetime) -> tuple[str, dt.datetime] | None:
        """(slot label, slot time) of the latest slot at or before ``now``."""
        if self.every is not None:
            index = math.floor(now.timestamp() / self.every)
            return str(index), dt.datetime.fromtimestamp(index * self.every, UTC)
        assert self.cron is not None
        moment = self.cron.latest(now)
        return (moment.strftime("%Y%m%dT%H%M"), moment) if moment else None

    def next_slot(self, now: dt.datetime) -> dt.datetime | None:
        """When the first slot after ``now`` falls due (what the dashboard shows as the next run)."""
        if self.every is not None:
            return dt.datetime.fromtimestamp((math.floor(now.timestamp() / self.every) + 1) * self.every, UTC)
        assert self.cron is not None
        return self.cron.following(now)

    def recent_slots(self, now: dt.datetime) -> list[str]:
        """The labels of the latest slot at or before ``now`` and of the one before it: the
        latest run's row has one of their dedupe keys (the latest may not be enqueued yet)."""
        latest = self.latest_slot(now)
        if latest is None:
            return []
        before = self.latest_slot(latest[1] - dt.timedelta(microseconds=1))
        return [latest[0], *([before[0]] if before else [])]

    def dedupe_key(self, slot: str) -> str:
        return f"periodic:{self.name}:{slot}"


def periodic(name: str, *, key: str | None = None, args: Mapping[str, Any] | None = None,
             every: float | dt.timedelta | None = None, cron: str | None = None,
             queue: str | None = None, priority: int | None = None) -> Periodic:
    """A periodic task: run task ``key`` (default: ``name``) every N seconds or on a cron schedule.

    Interval slots are aligned to the Unix epoch, so all supervisors agree on them.
    """
    if (every is None) == (cron is None):
        raise ValueError(f"periodic task {name!r}: give exactly one of every= or cron=")
    if isinstance(every, dt.timedelta):
        every = every.total_seconds()
    if every is not None and every <= 0:
        raise ValueError(f"periodic task {name!r}: every must be > 0 seconds")
    return Periodic(name, key or name, dict(args or {}), float(every) if every is not None else None,
                    Cron.parse(cron) if cron is not None else None, queue, priority)
