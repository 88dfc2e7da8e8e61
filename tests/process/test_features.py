"""Task features on every configured database, through real supervisors and the same leasing path:
delays, priorities, queues, dedupe, order keys, child tasks, hard timeouts, cancel, periodic
tasks, context propagation, eager mode, clean_succeeded and init_timeout_sensitive.

Handlers live in tests/handlers/feature_tasks.py (plugin ``tests.handlers.feature_tasks``) and write the ledger,
so executions are counted across processes without asking the database under test. Every
wait is a bounded `wait_for`; where a test shows that something does *not* happen, it waits
for a later event that could only come after the forbidden one had its chance.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

import gta_core
from gta_core.db.connect import utc_text
from gta_core.submit import TaskRequest
from gta_core.testing import eager
from gta_plugins.request_id import request_id

from ..support.helpers import Env, SupervisorProcess, wait_for, wait_log
from ..support.supervisors import FINAL, SERVING, entries, row, stop

PLUGINS = "tests.handlers.tasks,tests.handlers.feature_tasks"
CLOCK_SLACK = 0.02  # one host, one clock; timestamps keep microseconds


@pytest.fixture
def fenv(env: Env, monkeypatch: pytest.MonkeyPatch) -> Env:
    """`env` with this file's handlers loaded here and in every supervisor started later."""
    return env.with_plugins(monkeypatch, PLUGINS)


# -- helpers ------------------------------------------------------------------------------------
def start(env: Env, workers: int, *args: str, periodic: str | None = None, wait: bool = True) -> SupervisorProcess:
    """A supervisor (``GTA_TEST_PERIODIC=periodic``) whose workers are booted when ``wait``."""
    extra = {"GTA_TEST_PERIODIC": periodic} if periodic else None
    process = env.supervisor(workers, *args, extra_env=extra, wait_ready=False)
    if wait:
        wait_log(process, SERVING, workers)
    return process


def wait_entries(env: Env, phase: str, count: int, task_ids: Iterable[int] | None = None,
                 timeout: float = 30.0) -> list[dict[str, Any]]:
    wanted = None if task_ids is None else set(task_ids)

    def enough() -> list[dict[str, Any]] | None:
        found = [entry for entry in entries(env, phase) if wanted is None or entry["id"] in wanted]
        return found if len(found) >= count else None
    return wait_for(enough, timeout, f"{count} ledger entries {phase!r}")


def query(env: Env, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Direct SQL on the test's table (``?`` placeholders, ``{t}`` for the table, ``{k}`` for its key column)."""
    dialect = env.store.sql.dialect
    statement = dialect.fix(sql.format(t=env.table, k=dialect.q("key")))
    cursor = env.runtime.db.execute_sql(statement, tuple(params))
    return list(cursor.fetchall()) if cursor.description else []


def row_count(env: Env) -> int:
    return int(query(env, "SELECT COUNT(*) FROM {t}")[0][0])


def reaped(pids: Iterable[int]) -> bool:
    """No trace of ``pids`` is left, not even a zombie: their parent waited for them."""
    return not [pid for pid in pids if os.path.exists(f"/proc/{pid}")]


def max_overlap(spans: Iterable[tuple[float, float]]) -> int:
    """The most (begin, end) spans open at one instant."""
    spans = list(spans)
    events = sorted([(begin, 1) for begin, _ in spans] + [(end, -1) for _, end in spans])
    best = current = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best


def intervals(env: Env, ids: Iterable[int]) -> dict[tuple[int, int], tuple[float, float]]:
    """(task id, attempt) → (start, end) from the ledger's start/end entries."""
    wanted = set(ids)
    begins = {(e["id"], e["attempt"]): e["t"] for e in entries(env, "start") if e["id"] in wanted}
    ends = {(e["id"], e["attempt"]): e["t"] for e in entries(env, "end") if e["id"] in wanted}
    assert begins.keys() == ends.keys(), f"unfinished runs: {sorted(begins.keys() ^ ends.keys())}"
    return {run: (begins[run], ends[run]) for run in begins}


# -- delays, priorities, queues -------------------------------------------------------------------
def test_delayed_tasks_never_start_before_their_time(fenv: Env) -> None:
    env = fenv
    process = start(env, 1)
    before = time.time()
    moment = dt.datetime.now(dt.timezone(dt.timedelta(hours=5))) + dt.timedelta(seconds=2.5)  # aware, not UTC
    delays = {
        gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1}, delay=2): 2.0,
        gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 2}, delay=dt.timedelta(seconds=1.5)): 1.5,
    }
    at = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 3}, run_at=moment)
    at_once = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 0})  # wakes the worker while the others wait
    committed = time.time()

    for task_id, delay in delays.items():
        scheduled = row(env, task_id)  # run_at and created_at both come from the database clock
        assert abs((scheduled["run_at"] - scheduled["created_at"]).total_seconds() - delay) < 0.01, scheduled
    assert row(env, at)["run_at"] == moment

    delays[at] = (moment.timestamp() - before)
    ids = [*delays, at_once]
    assert env.wait_final(ids, 30) == {task_id: "succeeded" for task_id in ids}
    ran = {entry["id"]: entry["t"] for entry in entries(env, "run")}
    assert ran[at_once] - committed < 1.5, "the immediate task was not run at once"
    for task_id, delay in delays.items():
        final = row(env, task_id)
        run_at = final["run_at"].timestamp()
        assert final["started_at"] >= final["run_at"], f"leased before run_at on the database clock: {final}"
        assert ran[task_id] >= run_at - CLOCK_SLACK, f"task {task_id} ran {run_at - ran[task_id]:.3f}s early"
        assert ran[task_id] >= before + delay - CLOCK_SLACK, f"task {task_id} ran before submit time + {delay}s"
        assert ran[task_id] <= committed + delay + 3.0, f"task {task_id} ran {ran[task_id] - run_at:.1f}s late"
        assert ran[at_once] < run_at, "the worker was not awake while the delayed task waited"
        assert final["attempts"] == 1
    assert stop(process) == 0

    count = row_count(env)
    with pytest.raises(gta_core.InvalidArguments, match="timezone-aware"):
        gta_core.submit(gta_core.OWN_TRANSACTION, "record", run_at=dt.datetime.now())  # naive: ambiguous
    with pytest.raises(gta_core.InvalidArguments, match="delay or run_at"):
        gta_core.submit(gta_core.OWN_TRANSACTION, "record", delay=1, run_at=moment)
    with pytest.raises(gta_core.InvalidArguments, match="delay"):
        gta_core.submit(gta_core.OWN_TRANSACTION, "record", delay=-1)
    assert row_count(env) == count, "a refused submit wrote a row"


def test_priorities_order_a_backlog(fenv: Env) -> None:
    env = fenv
    plan: list[tuple[str, int | None]] = [("record", 0), ("record", 5), ("record", -3), ("urgent", None),
                                          ("record", 5), ("record", 10), ("record", 0), ("record", 10),
                                          ("urgent", 1), ("record", None)]
    ids = [gta_core.submit(gta_core.OWN_TRANSACTION,
                           key, {"n": n}, priority=priority) for n, (key, priority) in enumerate(plan)]
    priority = {task_id: row(env, task_id)["priority"] for task_id in ids}
    assert list(priority.values()) == [0, 5, -3, 7, 5, 10, 0, 10, 1, 0]  # urgent's @task(priority=7) default

    process = start(env, 1, "--threads", "1", "--batch", "1")
    assert env.wait_final(ids, 30) == {task_id: "succeeded" for task_id in ids}
    runs = entries(env, "run")
    assert [entry["t"] for entry in runs] == sorted(entry["t"] for entry in runs)
    expected = sorted(ids, key=lambda task_id: (-priority[task_id], task_id))
    assert [entry["id"] for entry in runs] == expected
    assert stop(process) == 0


def test_queues_isolate_supervisors(fenv: Env) -> None:
    env = fenv
    in_b = [gta_core.submit(gta_core.OWN_TRANSACTION, "in_b", {"n": n}) for n in range(2)]  # @task(queue="b") default
    in_default = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 2})
    in_a = [gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 3}, queue="a"),
            gta_core.submit(gta_core.OWN_TRANSACTION,
                            "in_b", {"n": 4}, queue="a")]  # an explicit queue beats the default
    assert [row(env, task_id)["queue"] for task_id in [*in_b, in_default, *in_a]] == ["b", "b", "default", "a", "a"]

    # One thread, batch 1, order priority/run_at/id: had the `a` worker looked at the older
    # b and default tasks at all, it would have leased them before the `a` tasks.
    only_a = start(env, 1, "--queues", "a", "--threads", "1", "--batch", "1")
    assert env.wait_final(in_a, 30) == {task_id: "succeeded" for task_id in in_a}
    for task_id in [*in_b, in_default]:
        waiting = row(env, task_id)
        assert (waiting["status"], waiting["attempts"], waiting["lease_owner"]) == ("pending", 0, None)
    assert {entry["id"] for entry in entries(env, "run")} == set(in_a)
    assert stop(only_a) == 0

    late_a = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 5}, queue="a")
    b_and_default = start(env, 1, "--queues", "b,default", "--threads", "1", "--batch", "1")
    marker = gta_core.submit(gta_core.OWN_TRANSACTION,
                             "in_b", {"n": 6})  # newer than late_a: leased after it, were it visible
    served = [*in_b, in_default, marker]
    assert env.wait_final(served, 30) == {task_id: "succeeded" for task_id in served}
    assert (row(env, late_a)["status"], row(env, late_a)["attempts"]) == ("pending", 0)
    workers = set(b_and_default.worker_pids())
    for task_id in served:
        (run,) = entries(env, "run", task_id)
        assert run["pid"] in workers
    assert [entry["queue"] for entry in entries(env, "run") if entry["id"] in (*in_b, in_a[1], marker)] == \
        ["a", "b", "b", "b"]
    assert stop(b_and_default) == 0


# -- dedupe ------------------------------------------------------------------------------------------
RACER = """
import os, sys, time
import gta_core
runtime = gta_core.get_runtime()
runtime.plugins  # load handlers and open the connection before the start line
runtime.db.connect()
ready, go, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.0005)
began = time.time()
task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": n}, dedupe_key="race-key")
print(task_id, began, time.time(), flush=True)
"""


def test_eight_processes_racing_on_one_dedupe_key_get_one_row(fenv: Env) -> None:
    env = fenv
    racers = []
    for n in range(8):
        racers.append(subprocess.Popen(
            [sys.executable, "-c", RACER, str(env.tmp_path / f"ready-{n}"), str(env.tmp_path / "go"), str(n)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ)))
    try:
        wait_for(lambda: all((env.tmp_path / f"ready-{n}").exists() or racers[n].poll() is not None
                             for n in range(8)), 60, "8 racers to be ready")
        (env.tmp_path / "go").touch()
        results = [racer.communicate(timeout=60) for racer in racers]
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
                racer.communicate()
    for racer, (_, err) in zip(racers, results, strict=True):
        assert racer.returncode == 0, err.decode()
    answers = [line.split() for line in (out.decode().strip() for out, _ in results)]
    ids = {int(answer[0]) for answer in answers}
    assert len(ids) == 1, f"racers got different ids: {answers}"
    (task_id,) = ids
    overlap = max_overlap((float(answer[1]), float(answer[2])) for answer in answers)
    assert overlap >= 2, "the racers' submits never overlapped: this run proved nothing"
    assert query(env, "SELECT id, dedupe_key, status FROM {t}") == [(task_id, "race-key", "pending")]
    winner = json.loads(row(env, task_id)["args"])

    # later submits, alone or in a caller's transaction, return the kept row and insert nothing
    assert gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 99}, dedupe_key="race-key") == task_id
    with env.runtime.db.atomic() as tx:
        assert gta_core.submit(tx, "record", {"n": 98}, dedupe_key="race-key") == task_id
    assert gta_core.cancel(task_id) == {task_id: gta_core.CancelResult(True, "pending")}
    assert gta_core.submit(gta_core.OWN_TRANSACTION,
                           "record", {"n": 97}, dedupe_key="race-key") == task_id  # kept, though final
    assert row_count(env) == 1
    kept = row(env, task_id)
    assert (kept["status"], json.loads(kept["args"])) == ("cancelled", winner)
    other = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 96}, dedupe_key="other-key")
    assert other != task_id and row_count(env) == 2


# -- order keys ----------------------------------------------------------------------------------------
def test_order_keys_run_one_at_a_time_in_submission_order(fenv: Env) -> None:
    """200 links over 10 chains on 2 supervisors x 2 workers x 2 threads.

    What a link that fails does to its chain: a link waiting for a retry keeps its chain
    waiting (the next link starts only after the retry finished), while a link that failed
    for good (here k0/5, by `Fail`) is final and releases the chain: k0/6 runs after it.
    """
    env = fenv
    supervisors = [start(env, 2, "--threads", "2", wait=False) for _ in range(2)]
    for process in supervisors:
        wait_log(process, SERVING, 2)
    requests, links = [], []
    for seq in range(20):
        for chain_index in range(10):
            chain = f"k{chain_index}"
            fail = {(0, 5): "for_good", (1, 3): "once"}.get((chain_index, seq))
            requests.append(TaskRequest("chain_link", {"chain": chain, "seq": seq, "fail": fail}, order_key=chain))
            links.append((chain, seq))
    ids: list[int] = []
    for first in range(0, len(requests), 50):  # submitted while the first ones already run
        ids += gta_core.submit_many(gta_core.OWN_TRANSACTION, requests[first:first + 50])
    assert ids == sorted(ids)
    statuses = env.wait_final(ids, 60)
    link_of = dict(zip(ids, links, strict=True))
    id_of = {link: task_id for task_id, link in link_of.items()}

    expected = {task_id: "succeeded" for task_id in ids}
    expected[id_of[("k0", 5)]] = "failed"
    assert statuses == expected
    runs = intervals(env, ids)
    for task_id in ids:
        attempts = 2 if link_of[task_id] == ("k1", 3) else 1
        assert row(env, task_id)["attempts"] == attempts
        assert sorted(attempt for run_id, attempt in runs if run_id == task_id) == list(range(1, attempts + 1))

    for chain_index in range(10):
        chain = f"k{chain_index}"
        previous_end, previous = 0.0, None
        for seq in range(20):
            task_id = id_of[(chain, seq)]
            for attempt in sorted(attempt for run_id, attempt in runs if run_id == task_id):
                begin, end = runs[(task_id, attempt)]
                assert begin >= previous_end, (f"{chain}/{seq} attempt {attempt} started "
                                               f"{previous_end - begin:.3f}s before {previous} ended")
                previous_end, previous = end, f"{chain}/{seq} attempt {attempt}"
    assert max_overlap(runs.values()) >= 2, "different order keys never ran in parallel"
    pids = {entry["pid"] for entry in entries(env, "start")}
    for process in supervisors:
        assert pids & set(process.worker_pids()), f"supervisor {process.pid} took no part"

    free = gta_core.submit_many(gta_core.OWN_TRANSACTION, [("sleepy", {"seconds": 1.0, "n": n}) for n in range(8)])
    assert env.wait_final(free, 30) == {task_id: "succeeded" for task_id in free}
    overlap = max_overlap(intervals(env, free).values())
    assert overlap >= 4, f"only {overlap} of 8 tasks without an order key ran at once (8 threads)"
    for process in supervisors:
        assert stop(process) == 0
        log = process.log()
        assert "lease on task" not in log and "taken over" not in log, "a lease was lost"
        assert "Traceback" not in log and "Exception in thread" not in log


# -- child tasks -----------------------------------------------------------------------------------------
def test_children_are_inserted_once_with_the_parents_success(fenv: Env) -> None:
    env = fenv
    process = start(env, 1)
    ok = gta_core.submit(gta_core.OWN_TRANSACTION, "parent", {"failures": 2})
    doomed = gta_core.submit(gta_core.OWN_TRANSACTION, "parent", {"failures": 9}, max_attempts=2)
    assert env.wait_final([ok, doomed], 30) == {ok: "succeeded", doomed: "failed"}

    def children() -> list[tuple[Any, ...]] | None:
        found = query(env, "SELECT id, parent_id, args, created_at FROM {t} WHERE parent_id IS NOT NULL ORDER BY id")
        return found if len(found) >= 3 and set(env.statuses([r[0] for r in found]).values()) <= FINAL else None
    found = wait_for(children, 30, "the children to finish")
    assert len(found) == 3, f"more than one set of children: {found}"
    assert {parent_id for _, parent_id, _, _ in found} == {ok}, "the failed parent left children"
    assert sorted(json.loads(args)["index"] for _, _, args, _ in found) == [0, 1, 2]
    assert {json.loads(args)["parent_attempt"] for _, _, args, _ in found} == {3}, "children of a failed attempt"
    assert set(env.statuses([r[0] for r in found]).values()) == {"succeeded"}

    parent_row = row(env, ok)
    assert parent_row["attempts"] == 3
    assert [entry["attempt"] for entry in entries(env, "parent", ok)] == [1, 2, 3]
    assert [entry["attempt"] for entry in entries(env, "parent", doomed)] == [1, 2]
    parent_done = entries(env, "parent", ok)[-1]["t"]
    for child_id, _, _, _ in found:
        child_row = row(env, child_id)
        assert child_row["created_at"] >= parent_row["finished_at"], "child inserted before its parent finished"
        assert child_row["started_at"] >= parent_row["finished_at"]
        (run,) = entries(env, "child", child_id)
        assert run["t"] > parent_done
    assert stop(process) == 0


# -- hard timeouts ---------------------------------------------------------------------------------------
def test_overrunning_task_is_killed_retried_and_fails_while_its_neighbour_is_released(fenv: Env) -> None:
    env = fenv
    process = start(env, 1, "--threads", "2")
    (first_worker,) = process.worker_pids()
    overrun, neighbour = gta_core.submit_many(gta_core.OWN_TRANSACTION,
                                              [("overrun", None), ("sleepy", {"seconds": 2.0})])
    assert env.wait_final([overrun, neighbour], 45) == {overrun: "failed", neighbour: "succeeded"}

    failed = row(env, overrun)
    assert failed["attempts"] == 2  # @task(timeout=1, max_attempts=2)
    assert "TaskTimeout" in failed["last_error"] and "past its timeout" in failed["last_error"]
    tries = entries(env, "start", overrun)
    assert [entry["attempt"] for entry in tries] == [1, 2] and entries(env, "end", overrun) == []
    killed = [entry["pid"] for entry in tries]
    assert killed[0] == first_worker and killed[1] != first_worker, "the overrunning worker was not replaced"
    assert tries[1]["t"] - tries[0]["t"] >= 1.0 - CLOCK_SLACK, "killed before its timeout"

    # the neighbour was interrupted with each kill, never charged for it, and finished later
    neighbour_runs = entries(env, "start", neighbour)
    assert len(neighbour_runs) >= 2 and neighbour_runs[0]["pid"] == first_worker
    assert {entry["attempt"] for entry in neighbour_runs} == {1}, "a release counted an attempt"
    (end,) = entries(env, "end", neighbour)
    assert end["pid"] not in killed
    assert row(env, neighbour)["attempts"] == 1

    # its history: each kill a timed-out attempt of the overrunning task, a release of its neighbour
    overran = gta_core.attempts(overrun) or []
    assert [(entry.number, entry.outcome) for entry in overran] == [(1, "timed_out"), (2, "timed_out")]
    assert {entry.exception_class_path for entry in overran} == {"gta_core.errors.TaskTimeout"}
    assert overran[0].retry_delay is not None and overran[1].retry_delay is None  # retried, then failed
    released = gta_core.attempts(neighbour) or []
    assert [entry.outcome for entry in released] == ["released"] * (len(released) - 1) + ["succeeded"]
    assert len(released) >= len(neighbour_runs) and {entry.number for entry in released} == {1}

    log = process.log()
    assert log.count(f"killed for overrunning tasks [{overrun}]") == 2
    (worker,) = process.wait_workers(1)  # the worker count is restored
    assert worker not in killed
    assert reaped(killed), "a killed worker was left a zombie"
    later = gta_core.submit(gta_core.OWN_TRANSACTION, "record")
    assert env.wait_final([later], 30) == {later: "succeeded"}
    assert entries(env, "run", later)[0]["pid"] == worker
    assert stop(process) == 0


# -- cancel ------------------------------------------------------------------------------------------------
def test_cancel_pending_and_running_tasks(fenv: Env) -> None:
    env = fenv
    # heartbeats every second, so they meet the cancelled task while its handler lingers
    process = start(env, 1, "--threads", "2", "--lease-timeout", "3")
    (worker,) = process.worker_pids()

    pending = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1}, delay=1)
    assert gta_core.cancel(pending) == {pending: gta_core.CancelResult(True, "pending")}
    cancelled = row(env, pending)
    assert (cancelled["status"], cancelled["attempts"]) == ("cancelled", 0)
    assert cancelled["finished_at"] is not None

    running = gta_core.submit(gta_core.OWN_TRANSACTION, "cooperative", {"linger": 2.2})
    wait_entries(env, "start", 1, [running])
    asked = time.time()
    assert gta_core.cancel([running, 123456789]) == {running: gta_core.CancelResult(True, "running")}
    assert row(env, running)["status"] == "cancelled"
    (saw,) = wait_entries(env, "saw_cancel", 1, [running], timeout=10)
    assert saw["t"] - asked < 3.0, f"the handler heard of its cancellation {saw['t'] - asked:.1f}s later"
    wait_entries(env, "end", 1, [running])
    assert gta_core.cancel(running) == {running: gta_core.CancelResult(False, "cancelled")}  # a final task: nothing

    # a task due after the cancelled one ran: the cancelled one had every chance, and never ran
    assert time.time() > row(env, pending)["run_at"].timestamp()
    marker = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 2})
    assert env.wait_final([marker], 30) == {marker: "succeeded"}
    assert entries(env, "run", pending) == []
    assert row(env, pending)["status"] == "cancelled"
    wait_for(lambda: "was cancelled while it ran" in process.log(), 10, "the rejected outcome to be logged")
    finished = row(env, running)
    assert (finished["status"], finished["attempts"]) == ("cancelled", 1)  # the handler's success was not recorded
    assert process.worker_pids() == [worker], "a cooperative cancel must not replace the worker"
    assert entries(env, "run", marker)[0]["pid"] == worker
    log = process.log()
    assert "taken over" not in log and "lease on task" not in log, "a cancelled task was reported as a lost lease"
    assert stop(process) == 0


def test_forced_cancel_replaces_the_worker_and_releases_its_other_task(fenv: Env) -> None:
    env = fenv
    process = start(env, 1, "--threads", "2")
    (worker,) = process.worker_pids()
    stubborn, neighbour = gta_core.submit_many(gta_core.OWN_TRANSACTION,
                                               [("stubborn", None), ("sleepy", {"seconds": 3.0})])
    first = wait_entries(env, "start", 2, [stubborn, neighbour])
    assert {entry["pid"] for entry in first} == {worker}

    assert gta_core.cancel(stubborn, force=True) == {stubborn: gta_core.CancelResult(True, "running")}
    wait_for(lambda: (pids := process.worker_pids()) and worker not in pids, 15, "the worker to be replaced")
    assert env.wait_final([neighbour], 30) == {neighbour: "succeeded"}
    (replacement,) = process.wait_workers(1)
    assert replacement != worker and reaped([worker])

    cancelled = row(env, stubborn)
    assert cancelled["status"] == "cancelled"
    assert entries(env, "end", stubborn) == [] and len(entries(env, "start", stubborn)) == 1
    starts = entries(env, "start", neighbour)
    assert [entry["pid"] for entry in starts] == [worker, replacement]
    (end,) = entries(env, "end", neighbour)
    assert end["pid"] == replacement
    assert row(env, neighbour)["attempts"] == 1, "the released neighbour was charged an attempt"
    log = process.log()
    assert "forced cancel" in log and "exit code 4" in log
    assert stop(process) == 0


# -- periodic tasks -------------------------------------------------------------------------------------------
def test_three_supervisors_run_each_periodic_slot_once(fenv: Env) -> None:
    """Every supervisor enqueues every slot; the dedupe key lets one insert win. Whichever
    supervisor ticks first after a slot starts tends to win it every time, so halfway through
    that one is stopped: the others must carry on without a gap."""
    env = fenv
    supervisors = [start(env, 1, periodic="tick", wait=False) for _ in range(3)]
    for process in supervisors:
        wait_log(process, SERVING, 1)

    def slots() -> dict[int, tuple[int, str]]:  # (built-in periodic tasks may run beside ours)
        found = query(env, "SELECT id, dedupe_key, status FROM {t} WHERE dedupe_key LIKE ?", ["periodic:tick:%"])
        return {int(dedupe.rsplit(":", 1)[1]): (task_id, status) for task_id, dedupe, status in found}

    def span(seconds: int) -> bool:
        done = [slot for slot, (_, status) in slots().items() if status == "succeeded"]
        return len(done) >= 2 and max(done) - min(done) >= seconds
    wait_for(lambda: span(5), 30, "five seconds of periodic slots", interval=0.25)
    latest = entries(env, "tick")[-1]["pid"]
    (winner,) = [process for process in supervisors if latest in process.worker_pids()]
    assert stop(winner) == 0
    stopped_at = time.time()
    wait_for(lambda: span(10), 30, "ten seconds of periodic slots", interval=0.25)
    for process in supervisors:
        if process is not winner:
            assert stop(process) == 0

    found = slots()
    dedupe_keys = [dedupe for (dedupe,) in query(env, "SELECT dedupe_key FROM {t} WHERE {k} = 'tick'")]
    assert len(dedupe_keys) == len(set(dedupe_keys)) == len(found), "a tick without its own slot"
    runs = env.runs_by_task("tick")
    done = sorted(slot for slot, (_, status) in found.items() if status == "succeeded")
    for slot, (task_id, status) in found.items():
        if status == "succeeded":
            assert runs.get(task_id) == 1, f"slot {slot} ran {runs.get(task_id)} times"
        else:  # enqueued as the supervisors stopped
            assert (status, row(env, task_id)["attempts"]) == ("pending", 0) and slot >= done[-1]
            assert task_id not in runs
    assert set(runs) == {found[slot][0] for slot in done}
    missing = sorted(set(range(min(found), max(found) + 1)) - set(found))
    assert len(missing) <= 1, f"slots {missing} were never enqueued"
    for slot in found:
        task = row(env, found[slot][0])
        assert task["run_at"] == dt.datetime.fromtimestamp(slot, dt.timezone.utc)  # due at its slot time
    later = [slot for slot in done if slot > stopped_at + 1]
    assert len(later) >= 3, f"only {later} ran after a supervisor stopped"


def test_cron_only_periodic_task_is_enqueued(fenv: Env) -> None:
    env = fenv
    before = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)
    # the built-in periodic tasks run on intervals: without them, ours is the only schedule
    process = start(env, 1, "--disable-plugin", "monitor", "--disable-plugin", "cleanup", periodic="cron")
    found = wait_for(lambda: query(env, "SELECT id, dedupe_key FROM {t} WHERE dedupe_key IS NOT NULL ORDER BY id"),
                     20, "the cron slot to be enqueued")
    ids = [task_id for task_id, _ in found]
    assert env.wait_final(ids, 30) == dict.fromkeys(ids, "succeeded")
    assert stop(process) == 0
    slots = [dt.datetime.strptime(dedupe, "periodic:minutely:%Y%m%dT%H%M").replace(tzinfo=dt.timezone.utc)
             for _, dedupe in found]
    assert len(slots) <= 2 and slots == sorted(set(slots)), slots  # a second one only if a minute began meanwhile
    assert before - dt.timedelta(minutes=1) <= slots[0] <= before + dt.timedelta(minutes=1)
    assert [row(env, task_id)["run_at"] for task_id in ids] == slots
    assert env.runs_by_task("tick") == dict.fromkeys(ids, 1)
    assert "Exception in thread" not in process.log()


@pytest.mark.parametrize(("kind", "message"), [
    ("bad_key", "periodic task 'broken': unknown task 'no_such_task'"),
    ("bad_args", "periodic task 'misfit': arguments for task 'tick' do not match"),
    ("clean_succeeded", "periodic task 'tidy': task 'clean_ok' is clean_succeeded"),
], ids=["unknown-key", "bad-args", "clean-succeeded"])
def test_bad_periodic_definition_stops_the_supervisor_at_start(fenv: Env, kind: str, message: str) -> None:
    """Refused before any worker starts, in one line. A clean_succeeded task cannot be periodic:
    deleting a slot's row on success let every other supervisor enqueue that slot again."""
    env = fenv
    process = start(env, 1, periodic=kind, wait=False)
    assert process.wait(30) == 2
    lines = [line for line in process.log().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("gta-supervisor: error: ") and message in lines[0]


# -- context propagation --------------------------------------------------------------------------------------
def test_request_id_reaches_the_handler_its_children_and_its_log_lines(fenv: Env) -> None:
    env = fenv
    process = start(env, 1, "--threads", "1")
    token = request_id.set("req-7f3a")
    try:
        traced = gta_core.submit(gta_core.OWN_TRANSACTION, "log_request", {"spawn": True})
    finally:
        request_id.reset(token)
    untraced = gta_core.submit(gta_core.OWN_TRANSACTION,
                               "log_request")  # same worker thread next: nothing may leak into it
    assert json.loads(row(env, traced)["context"]) == {"request_id": "req-7f3a"}
    assert row(env, untraced)["context"] is None

    seen = wait_entries(env, "request", 3, timeout=30)
    by_id = {entry["id"]: entry["request_id"] for entry in seen}
    (child,) = set(by_id) - {traced, untraced}
    assert row(env, child)["parent_id"] == traced
    assert by_id == {traced: "req-7f3a", untraced: None, child: "req-7f3a"}
    assert env.wait_final([traced, untraced, child], 30) == dict.fromkeys([traced, untraced, child], "succeeded")

    log = wait_log(process, "handling task", 3)
    lines = {task_id: [line for line in log.splitlines() if line.endswith(f"handling task {task_id}")]
             for task_id in (traced, untraced, child)}
    assert all(len(found) == 1 for found in lines.values()), lines
    assert "gta.task.log_request: [request req-7f3a] handling task" in lines[traced][0]
    assert "gta.task.log_request: [request req-7f3a] handling task" in lines[child][0]
    assert "gta.task.log_request: handling task" in lines[untraced][0]
    assert stop(process) == 0


# -- eager mode ----------------------------------------------------------------------------------------------------
def test_eager_mode_runs_handlers_inline_after_commit_and_never_on_rollback(fenv: Env) -> None:
    env = fenv
    db = env.runtime.db
    with eager() as run:
        with db.atomic() as tx:
            first = gta_core.submit(tx, "record", {"n": 1})
            with db.atomic() as inner:  # a nested block is part of the same transaction
                gta_core.submit(inner, "record", {"n": 2})
            assert entries(env) == [], "ran before the commit"
        assert [entry["n"] for entry in entries(env, "run")] == [1, 2]
        assert entries(env, "run")[0]["id"] == first
        assert run.outcomes("record") == ["succeeded", "succeeded"]

        class Boom(Exception):
            pass
        with pytest.raises(Boom), db.atomic() as tx:
            gta_core.submit(tx, "record", {"n": 3})
            raise Boom
        with pytest.raises(gta_core.InvalidArguments), db.atomic() as tx:
            gta_core.submit(tx, "record", {"n": 4, "colour": "red"})  # does not bind: refused at submit
        with pytest.raises(gta_core.InvalidArguments), db.atomic() as tx:
            gta_core.submit(tx, "record", {"n": {1, 2}})  # not JSON
        with pytest.raises(gta_core.UnknownTask):
            gta_core.submit(gta_core.OWN_TRANSACTION, "no_such_task")
        assert [entry["n"] for entry in entries(env, "run")] == [1, 2], "a rolled-back or refused submit ran"

        without_transaction = gta_core.submit(gta_core.OWN_TRANSACTION,
                                              "record", {"n": 5})  # no transaction: runs at once
        last = entries(env, "run")[-1]
        assert (last["id"], last["n"]) == (without_transaction, 5)

        # the handler's own exception reaches the test, on every database
        with pytest.raises(ValueError, match="always fails"), db.atomic() as tx:
            gta_core.submit(tx, "always_fails")
        assert run.outcomes("always_fails") == ["failed"]

        # children run after their parent's success, once, and never for a parent that failed
        gta_core.submit(gta_core.OWN_TRANSACTION, "parent", {"failures": 2, "how": "retry"})
        gta_core.submit(gta_core.OWN_TRANSACTION, "parent", {"failures": 1, "how": "fail"})
        assert run.outcomes("parent") == ["succeeded", "failed"]
        children = [result for result in run.results if result.key == "child"]
        assert [(c.args["index"], c.args["parent_attempt"], c.outcome) for c in children] == \
            [(0, 3, "succeeded"), (1, 3, "succeeded"), (2, 3, "succeeded")]
        (succeeded_parent,) = [r.task_id for r in run.results if r.key == "parent" and r.outcome == "succeeded"]
        assert {c.parent_id for c in children} == {succeeded_parent}
        assert [entry["phase"] for entry in entries(env) if entry["phase"] in ("parent", "child")] == \
            ["parent"] * 3 + ["child"] * 3 + ["parent"]
    assert row_count(env) == 0, "eager mode wrote rows"
    after = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 6})  # outside the block: a real, pending row
    assert row(env, after)["status"] == "pending" and len(entries(env, "run")) == 4


def test_eager_mode_results_are_the_handlers(fenv: Env) -> None:
    with eager(propagate=False):
        with fenv.runtime.db.atomic() as tx:
            hello = gta_core.submit(tx, "greet", {"name": "Ada"})
            assert gta_core.result(hello) == gta_core.TaskResult("pending")  # it runs at commit
            with pytest.raises(TimeoutError, match="commits"):
                gta_core.wait(hello, timeout=1)
        assert gta_core.result(hello) == gta_core.TaskResult("succeeded", "hello Ada!")
        assert gta_core.wait(hello, timeout=1) == gta_core.TaskResult("succeeded", "hello Ada!")
        failed = gta_core.submit(gta_core.OWN_TRANSACTION, "always_fails")
        assert gta_core.result(failed) == gta_core.TaskResult("failed", None, "ValueError: always fails")
        assert gta_core.result(failed + 1000) is None  # never given out
    assert row_count(fenv) == 0


# -- GTA's per-task options -----------------------------------------------------------------------------------------
def test_clean_succeeded_and_init_timeout_sensitive(fenv: Env) -> None:
    env = fenv
    clean, dirty = gta_core.submit_many(gta_core.OWN_TRANSACTION, [("clean_ok", None), ("clean_ok", {"fail": True})])
    stale, fresh = gta_core.submit_many(gta_core.OWN_TRANSACTION, [("init_sensitive", None), ("init_sensitive", None)])
    old_but_tolerant = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1})
    ten_minutes_ago = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(minutes=10)
    value: Any = utc_text(ten_minutes_ago) if env.store.dialect == "sqlite" else ten_minutes_ago
    with env.runtime.db.atomic():
        for task_id in (stale, old_but_tolerant):  # created long before initialized_timeout (5 min)
            query(env, "UPDATE {t} SET created_at = ?, run_at = ? WHERE id = ?", (value, value, task_id))

    process = start(env, 1)
    kept = [dirty, stale, fresh, old_but_tolerant]
    assert env.wait_final(kept, 30) == {dirty: "failed", stale: "failed", fresh: "succeeded",
                                        old_but_tolerant: "succeeded"}
    wait_for(lambda: env.store.get(clean) is None, 30, "the succeeded clean_succeeded row to be deleted")
    assert len(entries(env, "run", clean)) == 1
    assert len(entries(env, "run", dirty)) == 1 and "clean_ok was told to fail" in row(env, dirty)["last_error"]

    assert entries(env, "run", stale) == [], "an init_timeout_sensitive task past initialized_timeout ran"
    reason = row(env, stale)["last_error"]
    assert "initialized_timeout" in reason and "init_timeout_sensitive" in reason, reason
    assert len(entries(env, "run", fresh)) == 1 and len(entries(env, "run", old_but_tolerant)) == 1
    assert stop(process) == 0
