"""How long a worker trusts its leases, and how its lease loop is woken.

A lease lasts from when the statement that set it was sent, not from before `store.lease`
reconnected: after an outage, fresh leases looked lapsed and went back unrun. A task given
back wakes the lease loop (it waited a whole scan interval). The doorbell that wakes it waits
on the monotonic clock, across the spawn of a worker process.
"""
from __future__ import annotations

import queue
import time
from typing import Any

import multiprocess
import pytest

import gta_core
from gta_core.config import load_settings
from gta_core.tasks import TaskRecord
from gta_core.worker.channel import Doorbell, StopFlag, WorkerChannel
from gta_core.worker.held_leases import HeldLeases
from gta_core.worker.leasing import Leaser

from ..support.helpers import Env

SLOW_CONNECT = 0.5


def test_a_lease_lasts_from_when_its_statement_was_sent(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    (task_id,) = gta_core.submit_many(gta_core.OWN_TRANSACTION, [gta_core.TaskRequest("record", {})])
    db = env.runtime.db
    db.close()
    connect = db._connect

    def slow_connect() -> Any:  # a reconnect after an outage: SYNs resent, a timeout, a retry
        time.sleep(SLOW_CONNECT)
        return connect()
    monkeypatch.setattr(db, "_connect", slow_connect)
    before = time.monotonic()
    leased = env.store.lease("owner-a", ["default"], 1, 30.0)
    assert [task.id for task in leased] == [task_id]
    assert before + SLOW_CONNECT <= leased.sent <= time.monotonic()


def _channel(ctx: Any) -> WorkerChannel:
    return WorkerChannel(owner="host:1.0:token", wake=Doorbell(ctx), relay=Doorbell(ctx), stop=StopFlag(ctx),
                         running=ctx.Array("q", 1, lock=False), started=ctx.Array("d", 1, lock=False),
                         deadlines=ctx.Array("d", 1, lock=False), booted=StopFlag(ctx),
                         unwritten=ctx.Array("q", 4, lock=False))


class _Store:
    dialect = "postgres"  # its release's own NOTIFY wakes other workers: no local wake-up socket

    def release_lease(self, owner: str, task_id: int, attempt: int, reason: str) -> bool:
        return True


def test_a_lapsed_task_given_back_wakes_the_lease_loop() -> None:
    ctx = multiprocess.get_context("spawn")
    settings = load_settings({"lease_timeout": "3s", "threads": 1, "prefetch": 0}, environ={})
    channel, book = _channel(ctx), HeldLeases(settings.lease_timeout)
    leaser = Leaser(settings, _Store(), channel, book, queue.SimpleQueue(), ("record",))
    task = TaskRecord(7, "record", "default", "{}", None, 1, 3)
    book.add([task], time.monotonic() - settings.lease_timeout)  # waited in the queue past its lease
    channel.wake.clear()
    assert leaser.lapsed(task) is True
    assert channel.wake.wait(0), "the lease loop was left to wait a scan interval for the freed slot"


def _ring_later(bell: Doorbell, delay: float) -> None:
    time.sleep(delay)
    bell.ring()


def test_the_doorbell_wakes_across_a_spawned_process_and_times_out_on_the_monotonic_clock() -> None:
    ctx = multiprocess.get_context("spawn")
    bell = Doorbell(ctx)
    started = time.monotonic()
    assert bell.wait(0.2) is False
    assert 0.19 <= time.monotonic() - started < 1.0
    bell.ring()
    bell.ring()  # rings not yet heard are one ring
    assert bell.wait(5) is True and bell.wait(0) is False
    child = ctx.Process(target=_ring_later, args=(bell, 0.3))
    child.start()
    started = time.monotonic()
    assert bell.wait(30) is True, "the spawned process's ring never arrived"
    assert time.monotonic() - started < 10
    child.join(10)
    assert child.exitcode == 0
