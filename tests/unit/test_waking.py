"""`Waker`: which workers' doorbells a wake-up rings (real pipes and shared arrays, no processes)."""
from __future__ import annotations

import os
import time

import multiprocess
import pytest

from gta_core.supervisor import waking
from gta_core.supervisor.waking import Waker
from gta_core.worker.channel import Doorbell, StopFlag, WorkerChannel

CTX = multiprocess.get_context("spawn")


def _channel(slots: int = 2) -> WorkerChannel:
    channel = WorkerChannel(owner="host:1.0:token", wake=Doorbell(), relay=Doorbell(), stop=StopFlag(CTX),
                            running=CTX.Array("q", slots, lock=False), started=CTX.Array("d", slots, lock=False),
                            deadlines=CTX.Array("d", slots, lock=False), booted=StopFlag(CTX),
                            unwritten=CTX.Array("q", slots, lock=False))
    channel.booted.set()
    return channel


def _rung(channels: list[WorkerChannel | None]) -> list[bool]:
    return [channel is not None and channel.wake.pending() for channel in channels]


def test_a_wake_up_rings_the_first_idle_worker_only() -> None:
    channels: list[WorkerChannel | None] = [None, _channel(), _channel()]  # slot 0: no process
    waker = Waker(lambda: channels)
    waker.ring_idle()
    assert _rung(channels) == [False, True, False]


def test_busy_booting_and_stopping_workers_are_not_idle() -> None:
    busy, booting, stopping, idle = _channel(), _channel(), _channel(), _channel()
    busy.running[:] = [7, 8]
    booting.booted = StopFlag(CTX)  # not set: it leases once it has booted anyway
    stopping.stop.set()
    channels: list[WorkerChannel | None] = [busy, booting, stopping, idle]
    Waker(lambda: channels).ring_idle()
    assert _rung(channels) == [False, False, False, True]


def test_one_free_slot_makes_a_worker_idle() -> None:
    half = _channel()
    half.running[:] = [7, 0]
    channels: list[WorkerChannel | None] = [half, _channel()]
    Waker(lambda: channels).ring_idle()
    assert _rung(channels) == [True, False]


def test_a_second_wake_up_while_the_first_is_unheard_rings_the_next_worker() -> None:
    """A stream of submits spreads: the worker still to hear its ring will lease anyway."""
    channels: list[WorkerChannel | None] = [_channel(), _channel(), _channel()]
    waker = Waker(lambda: channels)
    waker.ring_idle()
    waker.ring_idle()
    assert _rung(channels) == [True, True, False]
    waker.ring_idle()
    waker.ring_idle()  # every idle worker has a ring pending: nothing more to do
    assert _rung(channels) == [True, True, True]
    assert all(channel is not None and channel.wake.wait(0) for channel in channels)
    waker.ring_idle()  # all heard: the first idle one again
    assert _rung(channels) == [True, False, False]


def test_no_idle_worker_rings_none() -> None:
    busy = _channel(1)
    busy.running[0] = 7
    channels: list[WorkerChannel | None] = [busy]
    Waker(lambda: channels).ring_idle()
    assert _rung(channels) == [False]


def test_a_ring_unheard_past_its_deadline_goes_to_every_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker may look idle and not lease (backing off from a failed lease, about to recycle):
    its ring must not be the only one."""
    monkeypatch.setattr(waking, "UNHEARD_AFTER", 0.05)
    stuck, busy = _channel(), _channel(1)
    busy.running[0] = 7
    channels: list[WorkerChannel | None] = [stuck, busy]
    waker = Waker(lambda: channels)
    waker.ring_idle()
    assert 0 < waker.check() <= 0.05
    assert _rung(channels) == [True, False]
    time.sleep(0.06)
    assert waker.check() > 60  # nothing left to watch
    assert _rung(channels) == [True, True]


def test_a_ring_heard_in_time_is_not_passed_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waking, "UNHEARD_AFTER", 0.05)
    channels: list[WorkerChannel | None] = [_channel(), _channel()]
    waker = Waker(lambda: channels)
    waker.ring_idle()
    assert channels[0] is not None and channels[0].wake.wait(0)
    time.sleep(0.06)
    waker.check()
    assert _rung(channels) == [False, False]


def test_a_full_lease_rings_every_idle_worker() -> None:
    """The worker whose lease came back full may still look idle (its task not started yet):
    ringing only the first idle worker could ring it again and no other."""
    busy = _channel(1)
    busy.running[0] = 7
    pending = _channel()
    pending.wake.ring()
    channels: list[WorkerChannel | None] = [_channel(), busy, pending, _channel()]
    Waker(lambda: channels).ring_every_idle()
    assert _rung(channels) == [True, False, True, True]
    assert os.read(pending.wake.fileno(), 16) == b"\0"  # rung once (before), not twice
