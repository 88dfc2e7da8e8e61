"""`HeldLeases`: the pace prefetch sizes itself by."""
from __future__ import annotations

import pytest

from gta_core.worker.held_leases import HeldLeases


def test_the_first_task_of_each_runner_does_not_set_the_pace() -> None:
    """The first task a worker runs pays its one-time costs; an average seeded with it kept
    prefetch near nothing for the tasks after it."""
    book = HeldLeases(lease_timeout=30)
    book.ran(0.07)  # the first task: the metrics client imported, a periodic job's queries
    assert book.pace is None
    book.ran(0.001)
    assert book.pace == 0.001
    book.ran(0.002)
    assert book.pace == pytest.approx(0.0012)
    book.ran_async(0.5)  # the event loop's first task is its own runner's first
    assert book.async_pace is None
    book.ran_async(0.02)
    assert book.async_pace == 0.02
