"""``ctx.cancel_event`` (`gta_core.tasks.LazyEvent`): a threading.Event in every way a handler
can tell, whose condition is made only when first needed."""
from __future__ import annotations

import threading
import time

from gta_core.tasks import LazyEvent, TaskContext


def test_is_a_threading_event_and_makes_no_condition_until_used() -> None:
    event = LazyEvent()
    assert isinstance(event, threading.Event)
    assert not event.is_set() and event._made is None  # the point of it: nothing built per attempt
    assert repr(event).endswith(": unset>")
    event.set()
    assert event.is_set() and event._made is not None and repr(event).endswith(": set>")


def test_a_context_gets_one_of_its_own() -> None:
    contexts = [TaskContext(n, "k", 1, 1, "default", {}, None) for n in range(2)]  # type: ignore[arg-type]
    assert all(type(ctx.cancel_event) is LazyEvent for ctx in contexts)
    assert contexts[0].cancel_event is not contexts[1].cancel_event
    contexts[0].cancel_event.set()
    assert contexts[0].cancelled and not contexts[1].cancelled


def test_wait_times_out_then_returns_at_once_once_set() -> None:
    event = LazyEvent()
    began = time.monotonic()
    assert event.wait(0.05) is False
    assert time.monotonic() - began >= 0.05
    event.set()
    assert event.wait(5) is True and event.wait() is True
    event.clear()
    assert not event.is_set() and event.wait(0) is False


def test_set_from_another_thread_wakes_every_waiter() -> None:
    """Waiters that arrive before the condition exists and the setter all share one condition."""
    for _ in range(20):
        event = LazyEvent()
        woke: list[bool] = []
        start = threading.Barrier(9)

        def waiter(event: LazyEvent = event, woke: list[bool] = woke, start: threading.Barrier = start) -> None:
            start.wait()
            woke.append(event.wait(10))

        threads = [threading.Thread(target=waiter) for _ in range(8)]
        for thread in threads:
            thread.start()
        start.wait()
        event.set()
        for thread in threads:
            thread.join(10)
        assert woke == [True] * 8
