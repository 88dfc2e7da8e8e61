"""Prefetch (`--prefetch N`): leases beyond free threads drain faster and lose nothing.

A worker holds about 50 ms of work at the pace its tasks have been running, at most N
beyond its threads, so slow tasks are not prefetched; and what it prefetched before a task
turned out slow goes back to other workers.

A prefetched task is leased but not started; if its worker dies it must go back to pending
without paying an attempt (the shared `running` array tells started from merely leased).
"""
from __future__ import annotations

import os
import signal
import time
from typing import Any

import gta_core
from gta_core.worker.leasing import UNPARK_AFTER

from ..support.helpers import Env, wait_for
from ..support.supervisors import entries, row, start, stop, wait_entries


def test_prefetch_drains_every_task_exactly_once(env: Env) -> None:
    ids = gta_core.submit_many(gta_core.OWN_TRANSACTION, [("record", {"n": n}) for n in range(300)])
    process = start(env, 2, "--prefetch", "20", "--batch", "20")
    assert env.wait_final(ids, 60) == {task_id: "succeeded" for task_id in ids}
    assert env.runs_by_task() == {task_id: 1 for task_id in ids}
    assert stop(process) == 0


def test_slow_tasks_are_not_prefetched(env: Env) -> None:
    """Prefetch adapts to the pace of tasks: once tasks take longer than the prefetch window,
    a worker holds only what its threads run, leaving the rest to other (idle) workers."""
    process = start(env, 1, "--threads", "1", "--prefetch", "3", "--batch", "4", "--lease-timeout", "30")
    first = gta_core.submit(gta_core.OWN_TRANSACTION, "sleepy", {"seconds": 0.3})
    env.wait_final([first])
    ids = gta_core.submit_many(gta_core.OWN_TRANSACTION, [("sleepy", {"seconds": 30, "n": n}) for n in range(4)])
    wait_entries(env, "start", 2)  # the first sleepy task, then one of these
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        statuses = sorted(row(env, task_id)["status"] for task_id in ids)
        assert statuses == ["pending", "pending", "pending", "running"], statuses
        time.sleep(0.1)
    process.kill_tree()


def test_tasks_prefetched_behind_a_long_task_go_to_an_idle_worker(env: Env) -> None:
    """A worker that prefetched quick tasks together with a far slower one hands them back once
    its thread has been on the slow one for a while (unrun, their attempt not counted), and
    leases nothing more meanwhile: the idle worker runs them long before the slow task ends.

    Found through the monitor's test: a busy worker kept leasing newly due tasks (a monitor
    run among them) behind a 4-second task, and ran them only when it ended."""
    process = start(env, 2, "--threads", "1", "--prefetch", "20", "--batch", "20", "--lease-timeout", "30")
    env.wait_final(gta_core.submit_many(gta_core.OWN_TRANSACTION,
                                        [("record", {"n": n}) for n in range(40)]))  # a fast pace
    # one statement: the slow task has the lowest id, so whoever leases it first prefetches the rest
    slow, *quick = gta_core.submit_many(gta_core.OWN_TRANSACTION,
                                        [("sleepy", {"seconds": 6})] + [("record", {"n": n}) for n in range(8)])
    assert env.wait_final(quick, 4.5) == dict.fromkeys(quick, "succeeded")
    assert row(env, slow)["status"] == "running" and not entries(env, "end", slow)
    runs = env.runs_by_task()
    assert {task_id: runs.get(task_id) for task_id in quick} == dict.fromkeys(quick, 1)
    assert {task_id: row(env, task_id)["attempts"] for task_id in quick} == dict.fromkeys(quick, 1)
    process.kill_tree()


def test_tasks_handed_back_wake_the_idle_worker(env: Env) -> None:
    """Hand-backs wake idle workers (on PostgreSQL through the release's NOTIFY, elsewhere through
    the local wake-up socket): tasks prefetched behind a long one start on the idle worker about
    `UNPARK_AFTER` after, not at that worker's next poll. Polls here are far apart (1 s doubling
    to 30 s), so without the wake-up the idle worker sleeps for 8 s after its empty lease."""
    process = start(env, 2, "--threads", "1", "--prefetch", "20", "--batch", "20", "--lease-timeout", "30",
                    "--instant-scan-interval", "1", "--scan-interval", "30")
    # the worker a wake-up rings, the first idle one, learns the (fast) pace of its tasks, so it
    # prefetches the quick tasks below behind the slow one (the other worker, if its poll came
    # first, would take the slow one alone and leave the quick ones to the first at once)
    for _ in range(3):
        env.wait_final(gta_core.submit_many(gta_core.OWN_TRANSACTION, [("record", {"n": n}) for n in range(20)]))
    time.sleep(3.5)  # both idle: polls after 1 and 2 s, the next one 4 s on, then 8 s
    slow, *quick = gta_core.submit_many(gta_core.OWN_TRANSACTION,
                                        [("sleepy", {"seconds": 10})] + [("record", {"n": n}) for n in range(6)])
    submitted = time.monotonic()
    env.wait_final(quick, 6)
    waited = time.monotonic() - submitted
    assert waited < UNPARK_AFTER + 2.5, f"the quick tasks waited {waited:.1f}s"
    assert row(env, slow)["status"] == "running"
    assert {task_id: row(env, task_id)["attempts"] for task_id in quick} == dict.fromkeys(quick, 1)
    process.kill_tree()


def test_killed_worker_returns_prefetched_tasks_without_counting_an_attempt(env: Env) -> None:
    process = start(env, 1, "--threads", "1", "--prefetch", "3", "--batch", "4", "--lease-timeout", "30")
    # quick tasks first: a worker prefetches only once it has seen the pace of its tasks
    env.wait_final(gta_core.submit_many(gta_core.OWN_TRANSACTION, [("record", {"n": n}) for n in range(20)]))
    ids = gta_core.submit_many(gta_core.OWN_TRANSACTION, [("sleepy", {"seconds": 30, "n": n}) for n in range(4)])
    first = wait_entries(env, "start", 1)[0]

    def all_leased() -> bool:
        return all(row(env, task_id)["status"] == "running" for task_id in ids)
    wait_for(all_leased, 20, "the worker to hold one running and three prefetched leases")
    first_owner = row(env, first["id"])["lease_owner"]  # before the kill: the janitor clears it at once
    os.kill(first["pid"], signal.SIGKILL)

    def settled() -> dict[int, Any] | None:
        rows = {task_id: row(env, task_id) for task_id in ids}
        others = [rows[task_id] for task_id in ids if task_id != first["id"]]
        return rows if rows[first["id"]]["status"] != "running" and others and all(
            other["status"] in ("pending", "running") and other["lease_owner"] != first_owner for other in others
        ) else None
    rows = wait_for(settled, 20, "the dead worker's leases to be given back")
    assert rows[first["id"]]["attempts"] == 1 and "WorkerDied" in (rows[first["id"]]["last_error"] or "")
    never_started = [task_id for task_id in ids if task_id != first["id"] and not entries(env, "start", task_id)]
    assert len(never_started) == 3
    for task_id in never_started:  # released, not charged: they never ran on the dead worker
        status, attempts = rows[task_id]["status"], rows[task_id]["attempts"]
        assert attempts == 0 if status == "pending" else attempts == 1, (task_id, status, attempts)
    process.kill_tree()


def test_batched_success_write_is_fenced_per_task(env: Env) -> None:
    """`complete_many` accepts only rows still leased by the writer; a taken-over one is untouched."""
    from ..support.leases import _expire, _row, _submit

    store = env.store
    ids = _submit(3)
    assert {task.id for task in store.lease("owner-a", ["default"], 3, 30)} == set(ids)
    stolen = ids[0]
    _expire(store, [stolen])
    assert [task.id for task in store.rescue_expired()] == [stolen]
    assert [task.id for task in store.lease("owner-b", ["default"], 3, 30)] == [stolen]

    assert store.complete_many("owner-a", ids) == set(ids[1:])
    assert [_row(env, task_id)["status"] for task_id in ids] == ["running", "succeeded", "succeeded"]
    assert _row(env, stolen)["lease_owner"] == "owner-b"
    assert store.complete_many("owner-a", ids) == set()  # already final: nothing written twice
    assert store.complete_many("owner-b", [stolen]) == {stolen}
