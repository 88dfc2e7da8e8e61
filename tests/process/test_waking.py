"""Wake-ups reach one idle worker per submit, every worker for a burst, and another worker when
the one rung does not answer (`gta_core.supervisor.waking`).

Polls are far apart here (30 s), so whatever starts within a few seconds was woken.
"""
from __future__ import annotations

import os
import re
import signal
import time

import gta_core

from ..support.helpers import Env, SupervisorProcess, wait_for
from ..support.supervisors import entries, start, stop

SLOW_POLLS = ("--instant-scan-interval", "30", "--scan-interval", "30")


def _worker_pid(process: SupervisorProcess, index: int) -> int:
    found = re.search(rf"worker {index} started \(pid (\d+)", process.log())
    assert found, process.log()
    return int(found.group(1))


def test_a_trickle_of_submits_runs_on_one_warm_worker(env: Env) -> None:
    """Each lone submit wakes one idle worker, the first, not every worker to race for it (N
    lease statements for one task, and on SQLite N-1 of them queued behind the winner's lock)."""
    process = start(env, 2, "--threads", "1", *SLOW_POLLS)
    ids = []
    for n in range(8):
        ids.append(gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": n}))
        assert env.wait_final(ids[-1:], 10) == {ids[-1]: "succeeded"}
        time.sleep(0.1)  # its worker's lease loop has looked again (its own ring heard)
    assert {entry["pid"] for entry in entries(env, "run")} == {_worker_pid(process, 0)}
    assert stop(process) == 0


def test_a_burst_reaches_every_worker(env: Env) -> None:
    """The worker rung leases what its slot can run (no prefetch here) and, its lease full,
    rings the supervisor's relay: every idle worker is rung for the rest."""
    process = start(env, 2, "--threads", "1", "--prefetch", "0", *SLOW_POLLS)
    ids = gta_core.submit_many(gta_core.OWN_TRANSACTION, [("sleepy", {"seconds": 3, "n": n}) for n in range(2)])
    started = wait_for(lambda: entries(env, "start") if len(entries(env, "start")) == 2 else None, 2.5,
                       "both tasks started")
    assert {entry["pid"] for entry in started} == set(process.worker_pids())
    assert env.wait_final(ids, 10) == dict.fromkeys(ids, "succeeded")
    assert stop(process) == 0


def test_a_ring_the_worker_does_not_hear_wakes_the_others(env: Env) -> None:
    """The first worker looks idle but cannot lease (stopped here; in life: backing off from a
    failed lease, about to recycle): its unheard ring is passed on to every worker."""
    process = start(env, 2, "--threads", "1", *SLOW_POLLS)
    first = _worker_pid(process, 0)
    os.kill(first, signal.SIGSTOP)
    try:
        began = time.monotonic()
        task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "record")
        assert env.wait_final([task_id], 5) == {task_id: "succeeded"}
        assert time.monotonic() - began < 2
        assert [entry["pid"] for entry in entries(env, "run")] == [_worker_pid(process, 1)]
    finally:
        os.kill(first, signal.SIGCONT)
    assert stop(process) == 0
