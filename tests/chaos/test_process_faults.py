"""Process faults: workers and supervisors killed and stopped in loops, handlers that take
their own process down, and a busy handler that outlives its lease.

Every scenario ends with `ChaosHarness.check`: all committed tasks final, nothing rolled
back ran or exists, one accepted completion each, duplicates only where the fault log shows
the first holder silenced for a lease period, attempts monotonic and bounded, no running
row left past its lease while a supervisor was up, dead workers replaced, no zombies, and
connections within bounds. The counters appear under "chaos counters" in pytest's summary.
"""
from __future__ import annotations

import signal
import threading
import time

import pytest

from .harness import ChaosHarness

pytestmark = pytest.mark.chaos

WORK = {"seconds": 0.1}


def test_workers_killed_in_a_loop_then_the_supervisor_under_a_stream(chaos: ChaosHarness) -> None:
    """Kill a random worker every ~0.5s (SIGKILL, SIGSEGV, SIGABRT, SIGTERM in turn) under a
    stream of submits, then SIGKILL the supervisor (its workers get SIGTERM) and start
    another: nothing lost, no overlap, dead workers reaped (no zombie) and replaced."""
    chaos.submit("chaos_work", [WORK] * 10)
    supervisor = chaos.supervisor()
    with chaos.stream("chaos_work", WORK, batch=2, every=0.25):
        for signum in (signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT, signal.SIGTERM, signal.SIGKILL):
            pid = chaos.random_worker()
            if pid is not None:
                chaos.send(pid, signum)
            time.sleep(0.5)
        chaos.kill_supervisor(supervisor)
        chaos.supervisor()
    report = chaos.check("kill-loop", within=60)
    assert report.faults["sigkill-supervisor"] == 1 and report.worker_restarts >= 1, report.line()


def test_sigstop_past_the_lease_reruns_and_the_stale_completion_is_refused(chaos: ChaosHarness) -> None:
    """A worker stopped past its lease loses the task to another worker; when it resumes, its
    late success is refused by the fence and the row keeps the new holder's outcome. Then
    short stops of workers and a supervisor stopped past the lease duplicate nothing."""
    chaos.supervisor()
    chaos.supervisor()
    held = chaos.submit("chaos_work", [{"seconds": 1.0}])[0]
    first = chaos.wait_started(held)
    chaos.pause(first.pid, chaos.lease_timeout + 1.5)  # rescued meanwhile, run again by another worker
    second = chaos.wait_started(held, count=2)
    assert second.owner != first.owner
    with chaos.stream("chaos_work", WORK):
        for seconds in (0.3, 0.5, 0.3):
            pid = chaos.random_worker()
            if pid is not None:
                chaos.pause(pid, seconds)
        chaos.pause(chaos.live_supervisors()[0].pid, chaos.lease_timeout + 1.0, kind="sigstop-supervisor")
    report = chaos.check("sigstop-loop", within=60)
    row = chaos.runtime.store.get(held)
    assert row is not None and row["status"] == "succeeded" and row["lease_owner"] == second.owner, row
    assert report.duplicate_reasons.get("sigstop", 0) >= 1 and report.unrecorded_completions >= 1, report.line()


DOOMED = [("chaos_exit", {}, "WorkerDied: worker"), ("chaos_segfault", {}, "killed by SIGSEGV"),
          ("chaos_memory", {"kill": True}, "killed by SIGKILL"), ("chaos_memory", {}, "MemoryError")]


def test_handlers_that_take_their_worker_down_end_failed(chaos: ChaosHarness) -> None:
    """os._exit, a segfault, memory exhausted under RLIMIT_AS (raised, and killed as by the OOM
    killer): each such task ends ``failed`` at max_attempts, each attempt ran once (no
    endless loop), and the innocent tasks around them succeed. One more task starves its
    worker's memory for a second and then runs 2.5 lease periods: the worker's other threads
    may meet MemoryError meanwhile, but its heartbeats go on, so it runs exactly once."""
    doomed = {chaos.submit(key, [args], max_attempts=2)[0]: outcome for key, args, outcome in DOOMED}
    starved = chaos.submit("chaos_memory", [{"hold": 1.0, "survive": 2.5 * chaos.lease_timeout}])[0]
    innocent = chaos.submit("chaos_work", [{"seconds": 0.1}] * 8)
    chaos.supervisor(3)
    chaos.check("handlers-kill-worker", within=90)
    for task_id, outcome in doomed.items():
        row = chaos.runtime.store.get(task_id)
        assert row is not None
        assert row["status"] == "failed" and row["attempts"] == row["max_attempts"], row
        assert outcome in row["last_error"], row["last_error"]
        assert [e.attempt for e in chaos.executions(task_id)] == list(range(1, row["max_attempts"] + 1))
    assert set(chaos.runtime.store.statuses(innocent).values()) == {"succeeded"}
    assert [(e.attempt, e.outcome) for e in chaos.executions(starved)] == [(1, "ok")]


def test_busy_handler_longer_than_the_lease_is_not_rerun(chaos: ChaosHarness) -> None:
    """CPU-bound pure-Python handlers running two lease periods on both workers keep their
    leases (the heartbeat thread still gets the GIL): each task runs exactly once."""
    spin = chaos.submit("chaos_spin", [{"seconds": 2 * chaos.lease_timeout}] * 2)
    chaos.supervisor()
    report = chaos.check("busy-handler", within=60)
    assert report.executions == 2 and report.duplicates == 0, report.line()
    assert [chaos.runtime.store.get(task_id)["attempts"] for task_id in spin] == [1, 1]  # type: ignore[index]


def test_success_not_yet_written_when_its_worker_dies_is_not_rerun(chaos: ChaosHarness) -> None:
    """A handler's plain success waits for the completer thread's batched write while the
    worker already runs its next task; here that next task kills the worker first.

    Found by this suite: the supervisor saw only the running task as executing and released
    the finished one *uncounted*, so it ran again under the same attempt number. The ledger
    must show each task's attempts strictly increasing (and, with the fix under way, no
    second run of a task that had succeeded).
    """
    requests = []
    for _ in range(4):
        requests += [("chaos_work", {"seconds": 0.0}), ("chaos_exit", {})]
    ids = [chaos.submit(key, [args], max_attempts=1)[0] for key, args in requests]
    chaos.supervisor(4)
    chaos.check("completed-then-crash", ids, within=90)


@pytest.mark.chaos(threads=2, workers=1)
def test_stale_outcome_of_an_older_lease_by_the_same_worker_is_refused(chaos: ChaosHarness) -> None:
    """A worker with a free handler thread is stopped past its lease; the task is rescued and,
    when the worker resumes, leased again *by the same worker* (same ``lease_owner``) while
    the first run still sleeps. The first run then fails: its retry write must be refused.

    Found by this suite: the fence (id, lease_owner, running) could not tell the two leases
    apart, so the stale retry put the row back to pending while the second run went on, and
    a third run started beside it (a duplicate no fault explains), and the stale run's
    success could be accepted over the newer lease.
    """
    task = chaos.submit("chaos_work", [{"first_seconds": chaos.lease_timeout + 3, "seconds": 3.0,
                                        "fail_first": True}])[0]
    chaos.supervisor()
    first = chaos.wait_started(task)
    chaos.pause(first.pid, chaos.lease_timeout + 1.5)
    chaos.check("own-stale-outcome", within=60)
    runs = chaos.executions(task)
    assert runs[1].owner == first.owner and runs[0].outcome == "error", runs  # the case under test


@pytest.mark.chaos(threads=1, workers=1)
def test_prefetched_tasks_whose_leases_lapsed_are_given_back_unrun(chaos: ChaosHarness) -> None:
    """A worker holding prefetched tasks behind a slow one is stopped past its lease; another
    supervisor's worker runs the rescued tasks meanwhile. When the stopped worker resumes, its
    prefetched leases may be gone: it must give them back unrun, not start them beside the new
    holder (found by the PostgreSQL soak: such a start is an overlap no fault explains)."""
    chaos.supervisor()
    warm_up = chaos.submit("chaos_work", [{"seconds": 0.0}] * 5)  # a fast pace: the worker then prefetches
    chaos.wait_final(warm_up, 30)
    slow, *quick = chaos.submit("chaos_work", [{"seconds": 1.0}] + [{"seconds": 0.0}] * 10)
    first = chaos.wait_started(slow)
    pause = threading.Thread(target=chaos.pause, args=(first.pid, chaos.lease_timeout + 2.0))
    pause.start()
    time.sleep(0.2)
    chaos.supervisor()  # leases what rescue gives back while the first worker is stopped
    pause.join()
    chaos.check("prefetch-lapse", within=60)
    assert {task_id: len(chaos.executions(task_id)) for task_id in quick} == dict.fromkeys(quick, 1)
    assert [run.pid for run in chaos.executions(slow)][0] == first.pid
