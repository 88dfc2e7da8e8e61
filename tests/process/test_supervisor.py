"""Crash guarantees with real ``gta-supervisor`` processes, real workers and real signals.

Every test runs on every configured database. Executions are counted in the ledger that
the test handlers append to (see tests/handlers/tasks.py), never in the database under test, and
every wait is a bounded `wait_for`.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import Any

import pytest

import gta_core

from ..support.helpers import Env, descendants, wait_for, wait_gone, wait_log
from ..support.supervisors import FINAL, SERVING, entries, row, start, stop, wait_entries

CLOCK_SLACK = 0.05  # the databases run on this host: one clock, but timestamps are rounded


def sleepy(count: int, seconds: float) -> list[int]:
    return gta_core.submit_many(gta_core.OWN_TRANSACTION,
                                [("sleepy", {"seconds": seconds, "n": n}) for n in range(count)])


def reaped(pids: Sequence[int]) -> bool:
    """No trace of ``pids`` is left, not even a zombie: their parent waited for them."""
    return not [pid for pid in pids if os.path.exists(f"/proc/{pid}")]


def test_two_supervisors_drain_every_task_exactly_once(env: Env) -> None:
    total = 2000
    supervisors = [env.supervisor(2, wait_ready=False) for _ in range(2)]
    for process in supervisors:
        wait_log(process, SERVING, 2)
    owner_of = {pid: index for index, process in enumerate(supervisors) for pid in process.worker_pids()}
    assert len(owner_of) == 4

    ids = gta_core.submit_many(gta_core.OWN_TRANSACTION, [("record", {"n": n}) for n in range(total)])

    def drained() -> bool:
        return sum(count for (_, status), count in env.store.counts().items() if status in FINAL) == total
    wait_for(drained, 60, f"{total} tasks to finish", interval=0.25)

    assert set(env.statuses(ids).values()) == {"succeeded"}
    assert env.runs_by_task() == {task_id: 1 for task_id in ids}, "a task ran twice or never"
    ran_on = {owner_of.get(entry["pid"]) for entry in entries(env, "run")}
    assert ran_on == {0, 1}, f"tasks ran on supervisors {ran_on}: both should have taken part"
    for process in supervisors:
        assert stop(process) == 0
    for process in supervisors:
        log = process.log()
        assert "database is locked" not in log.lower()
        assert "Traceback" not in log
        assert "lease on task" not in log and "taken over" not in log  # no lease was ever lost


def test_retries_back_off_then_fail_at_max_attempts(env: Env) -> None:
    # backoff for attempt n waits uniform(c/2, c) with c = retry_base * 2 ** (n - 1): [0.5, 1] then [1, 2]
    process = start(env, 2, "--retry-base", "1", "--retry-cap", "60", "--scan-interval", "0.2")
    flaky = gta_core.submit(gta_core.OWN_TRANSACTION, "flaky", {"failures": 2})
    always = gta_core.submit(gta_core.OWN_TRANSACTION, "always_fails")
    for_good = gta_core.submit(gta_core.OWN_TRANSACTION, "fails_for_good")
    delays: dict[tuple[int, int], float] = {}

    def watch() -> bool:
        for task_id in (flaky, always):
            current = row(env, task_id)
            if current["status"] == "pending" and current["attempts"]:
                delays[(task_id, current["attempts"])] = (current["run_at"] - current["updated_at"]).total_seconds()
        return set(env.statuses([flaky, always, for_good]).values()) <= FINAL
    wait_for(watch, 30, "the retried tasks to finish", interval=0.02)

    bounds = {1: (0.5, 1.0), 2: (1.0, 2.0)}
    for task_id in (flaky, always):
        for attempt, (low, high) in bounds.items():
            delay = delays.get((task_id, attempt))
            assert delay is not None, f"never saw task {task_id} waiting after attempt {attempt}: {delays}"
            assert low - CLOCK_SLACK <= delay <= high + CLOCK_SLACK, (task_id, attempt, delay)
        assert delays[(task_id, 2)] > delays[(task_id, 1)], f"the retry delay did not grow: {delays}"
        runs = entries(env, "run", task_id)
        assert [entry["attempt"] for entry in runs] == [1, 2, 3]
        for attempt in (1, 2):
            gap = runs[attempt]["t"] - runs[attempt - 1]["t"]
            delay = delays[(task_id, attempt)]
            assert gap >= delay - CLOCK_SLACK, f"attempt {attempt + 1} ran {gap:.2f}s after, before its delay"
            assert gap <= delay + 2.0, f"attempt {attempt + 1} ran {gap:.2f}s after a {delay:.2f}s delay"

    flaky_row, always_row, for_good_row = row(env, flaky), row(env, always), row(env, for_good)
    assert (flaky_row["status"], flaky_row["attempts"]) == ("succeeded", 3)
    assert (always_row["status"], always_row["attempts"]) == ("failed", 3)
    assert "ValueError: always fails" in always_row["last_error"]
    assert "Traceback" in always_row["last_error"]
    assert always_row["finished_at"] is not None
    assert (for_good_row["status"], for_good_row["attempts"]) == ("failed", 1)
    assert "gave up on purpose" in for_good_row["last_error"]
    assert len(entries(env, "run", for_good)) == 1
    assert stop(process) == 0


def test_scheduled_retry_survives_a_restart_and_is_not_early(env: Env) -> None:
    first = start(env, 1)
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "retry_later", {"delay": 4})

    def waiting() -> dict[str, Any] | None:
        current = row(env, task_id)
        return current if (current["status"], current["attempts"]) == ("pending", 1) else None
    scheduled = wait_for(waiting, 30, "the first attempt to ask for a retry")
    run_at = scheduled["run_at"].timestamp()
    assert abs((scheduled["run_at"] - scheduled["updated_at"]).total_seconds() - 4) <= CLOCK_SLACK

    assert stop(first) == 0
    after_stop = row(env, task_id)
    assert (after_stop["status"], after_stop["attempts"], after_stop["run_at"]) == ("pending", 1, scheduled["run_at"])

    second = start(env, 1)
    assert time.time() < run_at - 0.5, "the second supervisor came up too late for this test to prove anything"
    assert env.wait_final([task_id], 30) == {task_id: "succeeded"}
    runs = entries(env, "run", task_id)
    assert [entry["attempt"] for entry in runs] == [1, 2]
    assert runs[1]["t"] >= run_at - CLOCK_SLACK, f"second run {run_at - runs[1]['t']:.2f}s before its run_at"
    assert runs[1]["t"] - runs[0]["t"] >= 4 - CLOCK_SLACK
    assert runs[1]["pid"] in second.worker_pids()
    assert row(env, task_id)["attempts"] == 2
    assert stop(second) == 0


def test_killed_worker_tasks_rerun_long_before_lease_expiry(env: Env) -> None:
    process = start(env, 2, "--threads", "2", "--lease-timeout", "30")
    workers = process.worker_pids()
    ids = sleepy(4, 2.5)
    starts = wait_entries(env, "start", 4)
    assert {entry["pid"] for entry in starts} == set(workers), "each worker should hold two leases"
    victim = starts[0]["pid"]
    victim_tasks = {entry["id"] for entry in starts if entry["pid"] == victim}
    assert len(victim_tasks) == 2

    os.kill(victim, signal.SIGKILL)
    killed_at = time.time()

    def rerun() -> list[dict[str, Any]] | None:
        again = [entry for entry in entries(env, "start") if entry["id"] in victim_tasks and entry["pid"] != victim]
        return again if len(again) == len(victim_tasks) else None
    reruns = wait_for(rerun, 20, "the killed worker's tasks to start again")
    assert max(entry["t"] for entry in reruns) - killed_at < 10, "re-run had to wait for the 30 s lease to expire"
    replacement = wait_for(lambda: (pids := process.worker_pids()) and len(pids) == 2 and victim not in pids
                           and pids, 20, "a replacement worker")
    assert set(replacement) - set(workers), "no new worker process"
    assert reaped([victim]), "the killed worker was left a zombie"

    assert env.wait_final(ids, 30) == {task_id: "succeeded" for task_id in ids}
    for task_id in ids:
        ends = entries(env, "end", task_id)
        assert len(ends) == 1 and ends[0]["pid"] != victim
        expected = 2 if task_id in victim_tasks else 1  # the interrupted run was real: it counts
        assert row(env, task_id)["attempts"] == expected
        assert len(entries(env, "start", task_id)) == expected
    assert "killed by SIGKILL" in process.log()
    assert stop(process) == 0


def test_killed_supervisor_takes_its_workers_along(env: Env) -> None:
    first = start(env, 2, "--lease-timeout", "3", "--shutdown-timeout", "0.5")
    tree = descendants(first.pid)
    old_workers = first.worker_pids()
    assert set(old_workers) <= set(tree) and len(old_workers) == 2
    ids = sleepy(2, 3)
    wait_entries(env, "start", 2)

    first.popen.kill()  # SIGKILL the supervisor alone; its workers must notice and leave
    first.wait()
    wait_gone(tree, 15)

    second = start(env, 2, "--lease-timeout", "3")
    assert env.wait_final(ids, 40) == {task_id: "succeeded" for task_id in ids}
    new_workers = set(second.worker_pids())
    for task_id in ids:
        ends = entries(env, "end", task_id)
        assert len(ends) == 1 and ends[0]["pid"] in new_workers
        assert row(env, task_id)["attempts"] in (1, 2)  # released (not counted) or rescued (counted)
    assert stop(second) == 0


@pytest.mark.parametrize("target", ["supervisor", "process-group"])
def test_sigterm_waits_for_tasks_shorter_than_the_shutdown_timeout(env: Env, target: str) -> None:
    """``process-group`` is what systemd (KillMode=control-group), docker stop of a shell
    entry point or ``kill -TERM -PGID`` do: every worker gets SIGTERM at the same moment."""
    process = start(env, 2)  # shutdown timeout 10 s (conftest)
    workers = process.worker_pids()
    ids = sleepy(2, 1.5)
    wait_entries(env, "start", 2)
    assert entries(env, "end") == []

    began = time.monotonic()
    if target == "supervisor":
        process.signal(signal.SIGTERM)
    else:
        os.killpg(process.pid, signal.SIGTERM)  # the supervisor leads its own session (helpers)
    assert process.wait(20) == 0
    assert time.monotonic() - began < 8, "stopping waited for the shutdown timeout instead of the tasks"
    assert reaped(workers)
    assert "did not stop within the shutdown timeout" not in process.log()
    # the fork server outlived the workers (it ignores SIGTERM) and reported their exits
    assert "died" not in process.log() and process.log().count("exited (exit code 0)") == 2
    assert env.statuses(ids) == {task_id: "succeeded" for task_id in ids}
    for task_id in ids:
        assert len(entries(env, "end", task_id)) == 1
        assert row(env, task_id)["attempts"] == 1


def test_sigterm_releases_tasks_longer_than_the_shutdown_timeout(env: Env) -> None:
    process = start(env, 2, "--shutdown-timeout", "1")
    workers = process.worker_pids()
    ids = sleepy(2, 30)
    wait_entries(env, "start", 2)

    began = time.monotonic()
    assert stop(process, 20) == 0
    assert time.monotonic() - began < 8, "stopping took far longer than the 1 s shutdown timeout"
    assert reaped(workers)
    assert entries(env, "end") == []
    for task_id in ids:
        released = row(env, task_id)
        assert (released["status"], released["attempts"]) == ("pending", 0), released
        assert released["lease_owner"] is None and released["lease_expires_at"] is None


def test_second_sigint_exits_at_once_and_releases(env: Env) -> None:
    process = start(env, 2, "--shutdown-timeout", "30")
    workers = process.worker_pids()
    ids = sleepy(2, 30)
    wait_entries(env, "start", 2)

    process.signal(signal.SIGINT)
    wait_log(process, "SIGINT: stopping", timeout=10)
    with pytest.raises(subprocess.TimeoutExpired):  # one SIGINT waits for the running tasks
        process.wait(1.0)

    began = time.monotonic()
    process.signal(signal.SIGINT)
    assert process.wait(15) == 0
    assert time.monotonic() - began < 5, "a second SIGINT should exit at once"
    assert reaped(workers)
    assert entries(env, "end") == []
    for task_id in ids:
        released = row(env, task_id)
        assert (released["status"], released["attempts"], released["lease_owner"]) == ("pending", 0, None)


def test_crashing_handler_fails_at_max_attempts_and_its_worker_is_replaced(env: Env) -> None:
    process = start(env, 1)
    (first_worker,) = process.worker_pids()
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "crash")
    assert env.wait_final([task_id], 30) == {task_id: "failed"}

    failed = row(env, task_id)
    assert failed["attempts"] == 2  # max_attempts of `crash`
    assert "WorkerDied" in failed["last_error"] and "exit code 17" in failed["last_error"]
    runs = entries(env, "run", task_id)
    assert [entry["attempt"] for entry in runs] == [1, 2]
    assert runs[0]["pid"] == first_worker and runs[1]["pid"] != first_worker
    assert process.log().count("died: exit code 17") == 2

    # the supervisor goes on with a fresh worker, and the failed task is never leased again
    later = gta_core.submit(gta_core.OWN_TRANSACTION, "record")
    assert env.wait_final([later], 30) == {later: "succeeded"}
    (worker,) = process.worker_pids()
    assert worker not in {entry["pid"] for entry in runs}
    assert reaped([entry["pid"] for entry in runs]), "a crashed worker was left a zombie"
    assert entries(env, "run", later)[0]["pid"] == worker
    assert len(entries(env, "run", task_id)) == 2
    assert stop(process) == 0


def test_worker_whose_thread_dies_exits_and_its_task_is_settled(env: Env) -> None:
    """A worker that lost a thread must not live on: its leases would be renewed forever with
    nobody to finish them. It exits, and the supervisor settles the task like a crash's."""
    process = start(env, 1, "--threads", "1")
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "breaks_its_thread")
    assert env.wait_final([task_id]) == {task_id: "failed"}
    found = row(env, task_id)
    assert found["attempts"] == 2 and "WorkerDied" in (found["last_error"] or ""), found
    assert entries(env, "run", task_id) == []
    wait_log(process, "worker thread gta-handler-0 died", 2)
    env.wait_final([gta_core.submit(gta_core.OWN_TRANSACTION, "record")])  # the replacement worker serves the queue
    assert stop(process) == 0
