from __future__ import annotations

import datetime as dt

import pytest

from gta_core.schedules import Cron, periodic

UTC = dt.timezone.utc


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("expression", "now", "latest"), [
    ("*/15 * * * *", "2026-11-28 10:44:59", "2026-11-28 10:30:00"),
    ("0 9 * * 1-5", "2026-11-29 12:00:00", "2026-11-27 09:00:00"),  # Sunday → Friday 9:00
    ("30 2 1 * *", "2026-11-28 00:00:00", "2026-11-01 02:30:00"),
    ("@daily", "2026-11-28 00:00:00", "2026-11-28 00:00:00"),
    ("0 0 29 2 *", "2026-11-28 00:00:00", "2024-02-29 00:00:00"),  # leap day only
    ("0 12 13 * 5", "2026-11-28 00:00:00", "2026-11-27 12:00:00"),  # day 13 OR Friday
])
def test_cron_latest(expression: str, now: str, latest: str) -> None:
    assert Cron.parse(expression).latest(at(now)) == at(latest)


@pytest.mark.parametrize("expression", ["* * * *", "60 * * * *", "a * * * *", "*/0 * * * *", "5-1 * * * *"])
def test_bad_cron_is_rejected_with_its_field(expression: str) -> None:
    with pytest.raises(ValueError, match="cron expression"):
        Cron.parse(expression)


def test_interval_slots_are_epoch_aligned_and_shared() -> None:
    job = periodic("tick", every=10)
    assert job.latest_slot(at("2026-11-28 10:00:09.999")) == job.latest_slot(at("2026-11-28 10:00:00"))
    label, moment = job.latest_slot(at("2026-11-28 10:00:10"))  # type: ignore[misc]
    assert moment == at("2026-11-28 10:00:10")
    assert job.dedupe_key(label) == f"periodic:tick:{int(moment.timestamp() // 10)}"


def test_periodic_needs_exactly_one_schedule() -> None:
    with pytest.raises(ValueError):
        periodic("x")
    with pytest.raises(ValueError):
        periodic("x", every=1, cron="* * * * *")
    with pytest.raises(ValueError):
        periodic("x", every=0)
