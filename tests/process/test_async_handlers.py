"""``async def`` handlers on every configured database: they really run (their body, not just
the call that makes a coroutine), in workers and in eager mode.

Handlers live in tests/handlers/async_tasks.py (plugin ``tests.handlers.async_tasks``)."""
from __future__ import annotations

import asyncio
import os
import queue
import signal
import time
import types

import pytest

import gta_core
from gta_core.tasks import TaskRecord
from gta_core.testing import eager
from gta_core.worker.held_leases import HeldLeases
from gta_core.worker.leasing import Leaser
from gta_plugins.request_id import request_id

from ..support.helpers import Env, SupervisorProcess, wait_for, wait_log
from ..support.supervisors import SERVING, entries, row, stop

PLUGINS = "tests.handlers.tasks,tests.handlers.async_tasks"


@pytest.fixture
def aenv(env: Env, monkeypatch: pytest.MonkeyPatch) -> Env:
    """`env` with the async handlers loaded here and in every supervisor started later."""
    return env.with_plugins(monkeypatch, PLUGINS)


def test_async_handlers_bodies_run_in_a_worker(aenv: Env) -> None:
    env = aenv
    process = env.supervisor(1, wait_ready=False)
    wait_log(process, SERVING)
    ok = gta_core.submit(gta_core.OWN_TRANSACTION, "arecord", {"n": 7})
    flaky = gta_core.submit(gta_core.OWN_TRANSACTION, "aflaky", {"failures": 1})
    doomed = gta_core.submit(gta_core.OWN_TRANSACTION, "afail")
    assert env.wait_final([ok, flaky, doomed], 30) == {ok: "succeeded", flaky: "succeeded", doomed: "failed"}
    assert [entry["n"] for entry in entries(env, "run", ok)] == [7], "the coroutine's body did not run once"
    assert [entry["attempt"] for entry in entries(env, "run", flaky)] == [1, 2]
    assert row(env, flaky)["attempts"] == 2
    assert "async gave up on purpose" in row(env, doomed)["last_error"]
    assert stop(process) == 0


def test_eager_mode_runs_async_handlers(aenv: Env) -> None:
    env = aenv
    with eager() as run:
        gta_core.submit(gta_core.OWN_TRANSACTION, "arecord", {"n": 1})
        gta_core.submit(gta_core.OWN_TRANSACTION, "aparent", {"count": 2})
        gta_core.submit(gta_core.OWN_TRANSACTION, "afail")
        with pytest.raises(RuntimeError, match="async flaky failure"):  # a handler's own error reaches the test
            gta_core.submit(gta_core.OWN_TRANSACTION, "aflaky", {"failures": 1})
    assert run.outcomes("arecord") == ["succeeded"] * 3
    assert run.results[0].value == "ran 1"
    assert run.outcomes("aparent") == ["succeeded"]
    assert run.outcomes("afail") == ["failed"] and run.outcomes("aflaky") == ["failed"]
    assert sorted(entry["n"] for entry in entries(env, "run") if "n" in entry) == [0, 1, 1]


def test_eager_mode_runs_async_handlers_from_inside_a_running_loop(aenv: Env) -> None:
    env = aenv

    async def an_async_test() -> None:
        with eager() as run:
            gta_core.submit(gta_core.OWN_TRANSACTION, "arecord", {"n": 3})
        assert run.outcomes("arecord") == ["succeeded"]
    asyncio.run(an_async_test())
    assert [entry["n"] for entry in entries(env, "run")] == [3]


# -- the event loop: many at once, at most --concurrency -----------------------------------------------
def start(env: Env, *args: str) -> SupervisorProcess:
    process = env.supervisor(1, *args, wait_ready=False)
    wait_log(process, SERVING)
    return process


def asleepy(count: int, seconds: float) -> list[int]:
    return gta_core.submit_many(gta_core.OWN_TRANSACTION,
                                [("asleepy", {"seconds": seconds, "n": n}) for n in range(count)])


def overlap(env: Env, ids: list[int]) -> int:
    wanted = set(ids)
    spans = [(entry["t"], 1) for entry in entries(env, "start") if entry["id"] in wanted]
    spans += [(entry["t"], -1) for entry in entries(env, "end") if entry["id"] in wanted]
    best = current = 0
    for _, step in sorted(spans):
        current += step
        best = max(best, current)
    return best


def test_a_worker_runs_async_tasks_on_its_loop_beside_its_thread(aenv: Env) -> None:
    env = aenv
    process = start(env, "--threads", "1", "--concurrency", "60")
    sync = gta_core.submit(gta_core.OWN_TRANSACTION, "sleepy", {"seconds": 3.0})
    ids = asleepy(60, 1.0)
    began = time.monotonic()
    assert env.wait_final(ids, 30) == dict.fromkeys(ids, "succeeded")
    assert time.monotonic() - began < 2.9, "60 one-second coroutines did not run together (or waited for the thread)"
    assert overlap(env, ids) == 60
    assert env.wait_final([sync], 30) == {sync: "succeeded"}
    marker = gta_core.submit(gta_core.OWN_TRANSACTION, "arecord")
    env.wait_final([marker])
    assert entries(env, "run", marker)[0]["thread"] == "gta-async"
    assert {row(env, task_id)["attempts"] for task_id in ids} == {1}
    assert stop(process) == 0


def test_concurrency_caps_the_coroutines_in_flight(aenv: Env) -> None:
    env = aenv
    process = start(env, "--concurrency", "5")
    ids = asleepy(20, 0.4)
    assert env.wait_final(ids, 30) == dict.fromkeys(ids, "succeeded")
    assert overlap(env, ids) == 5
    assert stop(process) == 0


# -- timeouts ---------------------------------------------------------------------------------------------
def test_a_timeout_cancels_the_coroutine_and_keeps_the_worker(aenv: Env) -> None:
    env = aenv
    process = start(env)
    (worker,) = process.worker_pids()
    neighbours = asleepy(3, 2.5)
    overrun = gta_core.submit(gta_core.OWN_TRANSACTION, "aoverrun")
    assert env.wait_final([overrun, *neighbours], 30) == {overrun: "failed", **dict.fromkeys(neighbours, "succeeded")}
    failed = row(env, overrun)
    assert failed["attempts"] == 2 and "TaskTimeout" in failed["last_error"]
    assert "coroutine was cancelled" in failed["last_error"]
    assert [entry["attempt"] for entry in entries(env, "cancelled_error", overrun)] == [1, 2]
    tries = entries(env, "start", overrun)
    assert all(entry["pid"] == worker for entry in tries)
    assert process.worker_pids() == [worker], "a cancelled coroutine cost the worker its life"
    assert {row(env, task_id)["attempts"] for task_id in neighbours} == {1}
    assert "killed for overrunning" not in process.log()
    assert stop(process) == 0


@pytest.mark.parametrize("key", ["aignores_cancel", "ablocks_past_timeout"])
def test_a_coroutine_that_ignores_cancellation_or_blocks_the_loop_is_killed(aenv: Env, key: str) -> None:
    env = aenv
    process = start(env)
    (worker,) = process.worker_pids()
    neighbour = asleepy(1, 3.0)[0]
    stubborn = gta_core.submit(gta_core.OWN_TRANSACTION, key)
    assert env.wait_final([stubborn, neighbour], 45) == {stubborn: "failed", neighbour: "succeeded"}
    failed = row(env, stubborn)
    assert failed["attempts"] == 1 and "TaskTimeout" in failed["last_error"]
    assert "past its timeout" in failed["last_error"]
    assert f"killed for overrunning tasks [{stubborn}]" in process.log()
    if key == "aignores_cancel":
        assert len(entries(env, "ignored_cancel", stubborn)) >= 1, "the coroutine was never cancelled before the kill"
    assert worker not in process.wait_workers(1), "the worker was not replaced"
    assert row(env, neighbour)["attempts"] == 1, "the innocent neighbour was charged for the kill"
    assert stop(process) == 0


# -- heartbeats while the loop is blocked ------------------------------------------------------------
@pytest.mark.parametrize("spin", [False, True], ids=["sleeps", "spins"])
def test_heartbeats_renew_while_a_coroutine_blocks_the_loop(aenv: Env, spin: bool) -> None:
    env = aenv
    process = start(env, "--lease-timeout", "2")
    blocker = gta_core.submit(gta_core.OWN_TRANSACTION, "ablocks_loop", {"seconds": 5.0, "spin": spin})
    waiting = asleepy(3, 0.1)
    assert env.wait_final([blocker, *waiting], 30) == dict.fromkeys([blocker, *waiting], "succeeded")
    assert env.runs_by_task("start") == dict.fromkeys([blocker, *waiting], 1), "a lease lapsed: a task ran twice"
    assert row(env, blocker)["attempts"] == 1
    log = process.log()
    assert "taken over" not in log and "lease on task" not in log
    assert stop(process) == 0


# -- cancel ---------------------------------------------------------------------------------------------
def test_cancel_reaches_the_coroutine_as_cancelled_error(aenv: Env) -> None:
    env = aenv
    process = start(env, "--lease-timeout", "3")
    (worker,) = process.worker_pids()
    running = gta_core.submit(gta_core.OWN_TRANSACTION, "acooperative")
    wait_for(lambda: entries(env, "start", running), 30, "the coroutine to start")
    asked = time.time()
    assert gta_core.cancel(running) == {running: gta_core.CancelResult(True, "running")}
    (saw,) = wait_for(lambda: entries(env, "saw_cancel", running), 10, "the CancelledError")
    assert saw["flag"] is True, "ctx.cancelled was not set when the CancelledError arrived"
    assert saw["t"] - asked < 3.0
    wait_for(lambda: "was cancelled while it ran" in process.log(), 10, "the rejected outcome to be logged")
    assert (row(env, running)["status"], row(env, running)["attempts"]) == ("cancelled", 1)
    later = gta_core.submit(gta_core.OWN_TRANSACTION, "arecord")
    assert env.wait_final([later]) == {later: "succeeded"}
    assert process.worker_pids() == [worker]
    assert stop(process) == 0


# -- children, context --------------------------------------------------------------------------------
def test_children_and_the_request_id_follow_an_async_parent(aenv: Env) -> None:
    env = aenv
    process = start(env)
    token = request_id.set("req-async-7")
    try:
        parent = gta_core.submit(gta_core.OWN_TRANSACTION, "aparent", {"count": 3})
    finally:
        request_id.reset(token)
    assert env.wait_final([parent]) == {parent: "succeeded"}
    (ran,) = entries(env, "parent", parent)
    assert ran["request_id"] == "req-async-7"
    children = wait_for(lambda: (found := [e for e in entries(env, "run") if e.get("n") is not None])
                        and len(found) >= 3 and found, 30, "the children to run")
    assert sorted(entry["n"] for entry in children) == [0, 1, 2]
    assert {entry["request_id"] for entry in children} == {"req-async-7"}
    assert stop(process) == 0


def test_an_attempt_sees_no_context_variable_an_earlier_one_set_in_its_slot(aenv: Env) -> None:
    """Attempts run one after another in the one slot of ``--concurrency 1``, each in an asyncio
    task that starts from the event loop's context, not from the attempt before it."""
    env = aenv
    process = start(env, "--concurrency", "1")
    ids = [gta_core.submit(gta_core.OWN_TRANSACTION, "asets_context", {"n": n}) for n in range(5)]
    assert env.wait_final(ids, 30) == dict.fromkeys(ids, "succeeded")
    assert sorted((entry["n"], entry["found"]) for entry in entries(env, "run")) == [(n, None) for n in range(5)]
    assert stop(process) == 0


# -- crashes and shutdown ------------------------------------------------------------------------------
def test_sigkill_with_100_coroutines_in_flight_reruns_them_all(aenv: Env) -> None:
    env = aenv
    process = start(env, "--concurrency", "100")
    (worker,) = process.worker_pids()
    ids = asleepy(100, 4.0)
    wait_for(lambda: len(entries(env, "start")) >= 100, 30, "100 coroutines in flight")
    assert not entries(env, "end")
    os.kill(worker, signal.SIGKILL)
    assert env.wait_final(ids, 60) == dict.fromkeys(ids, "succeeded")
    ends = {entry["id"] for entry in entries(env, "end")}
    assert ends == set(ids), f"lost: {sorted(set(ids) - ends)}"
    assert {row(env, task_id)["attempts"] for task_id in ids} == {2}, "each killed run counts one attempt"
    assert {entry["pid"] for entry in entries(env, "end")} != {worker}
    assert stop(process) == 0


def test_sigterm_drains_the_running_coroutines_and_releases_the_waiting_ones(aenv: Env) -> None:
    env = aenv
    process = start(env, "--concurrency", "10", "--prefetch", "20")
    ids = asleepy(30, 2.0)
    wait_for(lambda: len(entries(env, "start")) >= 10, 30, "10 coroutines in flight")
    assert stop(process) == 0
    started = {entry["id"] for entry in entries(env, "start")}
    ended = {entry["id"] for entry in entries(env, "end")}
    assert ended == started and len(started) == 10, "a running coroutine was cut short, or a new one started"
    statuses = env.statuses(ids)
    for task_id in ids:
        state = row(env, task_id)
        if task_id in started:
            assert (statuses[task_id], state["attempts"]) == ("succeeded", 1)
        else:
            assert (statuses[task_id], state["attempts"]) == ("pending", 0), state


# -- prefetch at the loop's pace ----------------------------------------------------------------------
def test_prefetch_follows_the_event_loops_pace() -> None:
    """Fast coroutines bring prefetch up to ``--prefetch``; slow ones bring it down to nothing,
    whatever the threads' pace."""
    settings = gta_core.load_settings({"threads": 1, "prefetch": 200}, environ={})
    channel = types.SimpleNamespace(owner="me", running=[0] * 101, started=[0.0] * 101)
    leaser = Leaser(settings, None, channel, HeldLeases(settings.lease_timeout), queue.SimpleQueue(), ())  # type: ignore[arg-type]
    leaser.route_async(100, lambda task: True, lambda tasks: None)
    assert leaser.slots == 101
    assert leaser.prefetch_allowance() == 0, "prefetch before any task finished"
    leaser.book.async_pace = 0.02  # 100 slots x 50 ms / 20 ms = 250, capped at --prefetch
    assert leaser.prefetch_allowance() == 200
    leaser.book.async_pace = 1.0
    assert leaser.prefetch_allowance() == 5
    leaser.book.async_pace = 10.0
    leaser.book.pace = 10.0
    assert leaser.prefetch_allowance() == 0


def test_a_worker_leases_for_the_kind_of_tasks_its_queues_bring() -> None:
    """A lease cannot pick sync or async rows: a worker whose queues bring only async tasks
    stops leasing for its idle threads, and the reverse, so that nothing waits behind the busy
    runner of its kind only to be handed back and leased again."""
    settings = gta_core.load_settings({"threads": 2, "prefetch": 0}, environ={})
    channel = types.SimpleNamespace(owner="me", running=[0] * 12, started=[0.0] * 12)
    todo: queue.SimpleQueue[TaskRecord | None] = queue.SimpleQueue()
    leaser = Leaser(settings, None, channel, HeldLeases(settings.lease_timeout), todo, ())  # type: ignore[arg-type]
    to_loop: list[TaskRecord] = []
    leaser.route_async(10, lambda task: task.key == "async", to_loop.extend)
    assert leaser.slots == 12  # nothing known yet: both kinds
    leaser.dispatch([TaskRecord(n, "async", "default", "{}", None, 1, 3) for n in range(20)])
    assert len(to_loop) == 20 and todo.empty()
    assert leaser.slots == 10, "still leasing for threads that only ever get async tasks"
    leaser.dispatch([TaskRecord(n, "sync", "default", "{}", None, 1, 3) for n in range(2)])
    assert leaser.slots == 12, "a sync task arrived: the threads count again"
    leaser.dispatch([TaskRecord(n, "sync", "default", "{}", None, 1, 3) for n in range(30)])
    assert leaser.slots == 2


def test_slow_coroutines_are_not_prefetched(aenv: Env) -> None:
    """Once coroutines take far longer than the prefetch window, a worker whose queue brings
    async tasks holds no more than its two async slots run (none for its idle thread)."""
    env = aenv
    process = start(env, "--concurrency", "2", "--prefetch", "5", "--batch", "8")
    env.wait_final(asleepy(20, 0.3))  # a pace of 0.3 s: 50 ms of work is no task at all
    ids = asleepy(6, 30)
    wait_for(lambda: len(entries(env, "start")) >= 22, 30, "two slow coroutines to start")
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        statuses = sorted(env.statuses(ids).values())
        assert statuses == ["pending"] * 4 + ["running"] * 2, statuses
        time.sleep(0.1)
    assert len(entries(env, "start")) == 22, "more coroutines started than there are async slots"
    process.kill_tree()


def test_tasks_waiting_behind_long_coroutines_go_to_an_idle_worker(aenv: Env) -> None:
    env = aenv
    process = env.supervisor(2, "--concurrency", "1", "--prefetch", "20", "--batch", "20", wait_ready=False)
    wait_log(process, SERVING, 2)
    quick = gta_core.submit_many(gta_core.OWN_TRANSACTION, [("arecord", {"n": n}) for n in range(40)])
    env.wait_final(quick)  # a fast pace
    slow, *waiting = gta_core.submit_many(gta_core.OWN_TRANSACTION,
                                          [("asleepy", {"seconds": 6})] + [("arecord", {"n": n}) for n in range(8)])
    assert env.wait_final(waiting, 4.5) == dict.fromkeys(waiting, "succeeded")
    assert {row(env, task_id)["attempts"] for task_id in waiting} == {1}
    assert env.wait_final([slow], 30) == {slow: "succeeded"}
    assert stop(process) == 0
