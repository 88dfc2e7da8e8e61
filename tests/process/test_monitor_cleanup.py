"""The monitor and cleanup built-ins, with real supervisors, on every configured database.

What the monitor reported is read from the ledger, where the test plugin ``tests.handlers.monitor_probe``
writes each ``gta_abnormal_tasks`` call (and each start of a built-in task); nothing is inferred
from timing alone.
"""
from __future__ import annotations

import os
import re
import signal
from typing import Any

import pytest

import gta_core
from gta_core import load_settings
from gta_core.plugins import build_plugins
from gta_core.runtime import Runtime, get_runtime
from gta_core.supervisor.services.periodic import collect_periodics
from gta_plugins.cleanup import delete_expired
from gta_plugins.monitor import monitor_timeout

from ..support.helpers import Env, SupervisorProcess, wait_for, wait_log
from ..support.rows import age, count, finished_long_ago, make

SERVING = "serving queues"
DAY = 86400.0


def builtins(monitor: str = "1s", cleanup: str = "1h", disable: str = "", **variables: str) -> dict[str, str]:
    """Environment for a supervisor running the built-ins (on whatever the test setup disables)
    with the probe plugin, a short monitor period and the given cleanup period."""
    return {"GTA_PLUGINS": "tests.handlers.tasks,tests.handlers.monitor_probe", "GTA_DISABLE_PLUGINS": disable,
            "GTA_MONITOR_INTERVAL": monitor, "GTA_CLEANUP_INTERVAL": cleanup, **variables}


def start(env: Env, workers: int, *args: str, extra_env: dict[str, str]) -> SupervisorProcess:
    process = env.supervisor(workers, *args, extra_env=extra_env)
    wait_log(process, SERVING, workers)
    return process


def ledger(env: Env, phase: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [entry for entry in env.ledger_entries()
            if entry["phase"] == phase and (kind is None or entry.get("kind") == kind)]


def reports(env: Env, kind: str, task_id: int) -> list[dict[str, Any]]:
    """The probe's records of monitor calls of ``kind`` that named ``task_id``."""
    return [entry for entry in ledger(env, "abnormal", kind) if task_id in entry["ids"]]


def wait_report(env: Env, kind: str, task_id: int, timeout: float = 30) -> dict[str, Any]:
    return wait_for(lambda: (found := reports(env, kind, task_id)) and found[0], timeout,
                    f"the monitor to report task {task_id} as {kind}")


def row(env: Env, task_id: int) -> dict[str, Any]:
    found = env.store.get(task_id)
    assert found is not None, f"task {task_id} vanished"
    return found


def starts(env: Env, task_id: int) -> list[dict[str, Any]]:
    return [entry for entry in env.ledger_entries() if entry["phase"] == "start" and entry["id"] == task_id]


# -- the monitor -----------------------------------------------------------------------------------
def test_stopped_worker_is_rescued_reported_and_its_late_write_fenced(env: Env) -> None:
    process = start(env, 2, "--lease-timeout", "1.5", extra_env=builtins())
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "sleepy", {"seconds": 2})
    first = wait_for(lambda: starts(env, task_id), 30, "the task to start")[0]
    stopped = first["pid"]
    os.kill(stopped, signal.SIGSTOP)  # frozen mid-task: its heartbeats stop, its lease expires
    try:
        second = wait_for(lambda: (found := starts(env, task_id)) and len(found) == 2 and found[1], 30,
                          "the task to be rescued and started again")
        assert second["pid"] != stopped and (first["attempt"], second["attempt"]) == (1, 2)
        assert env.wait_final([task_id], 30) == {task_id: "succeeded"}
        reported = wait_report(env, "rescued", task_id)
        assert reported["pid"] != stopped
        done = row(env, task_id)
    finally:
        os.kill(stopped, signal.SIGCONT)  # now the stale worker finishes and tries to record success

    log = wait_log(process, f"lease on task {task_id} was lost before its outcome was recorded")
    ends = wait_for(lambda: (found := [entry for entry in env.ledger_entries()
                                       if entry["phase"] == "end" and entry["id"] == task_id])
                    and len(found) == 2 and found, 30, "both runs to end")
    assert {entry["pid"] for entry in ends} == {stopped, second["pid"]}
    assert row(env, task_id) == done, "the stale worker's write changed the row"
    assert (done["status"], done["attempts"]) == ("succeeded", 2)
    assert done["last_error"].startswith("lease expired")
    assert re.search(rf"abnormal tasks, rescued: \d+ task\(s\): .*\b{task_id} \(sleepy\)", log), log
    assert "Traceback" not in log


def test_abnormal_hook_gets_stuck_pending_running_and_failed_tasks(env: Env) -> None:
    process = start(env, 2, "--initialized-timeout", "1s", "--running-timeout", "1s", extra_env=builtins())
    orphan = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1}, queue="nobody-serves-this")
    later = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 2}, queue="nobody-serves-this", delay=3600)
    busy = gta_core.submit(gta_core.OWN_TRANSACTION, "sleepy", {"seconds": 4})
    failed = gta_core.submit(gta_core.OWN_TRANSACTION, "fails_for_good")

    wait_report(env, "initialized_timeout", orphan)
    wait_report(env, "running_timeout", busy)
    first_failure = wait_report(env, "failed", failed)
    # a failure is news once: later runs (their windows start where the last one ended) skip it
    wait_for(lambda: len([entry for entry in ledger(env, "started gta_monitor") if entry["t"] > first_failure["t"]])
             >= 3 and row(env, busy)["status"] == "succeeded", 30, "three more monitor runs and the busy task")
    assert len(reports(env, "failed", failed)) == 1, ledger(env, "abnormal", "failed")
    assert len(reports(env, "initialized_timeout", orphan)) >= 2  # a state: reported while it lasts

    for kind in ("running_timeout", "rescued", "failed"):
        assert not reports(env, kind, orphan), f"the never-run task was reported as {kind}"
    for kind in ("initialized_timeout", "running_timeout", "rescued", "failed"):
        assert not reports(env, kind, later), f"the task due in an hour was reported as {kind}"
    log = process.log()
    assert re.search(rf"abnormal tasks, initialized_timeout: \d+ task\(s\): .*\b{orphan} \(record\)", log)
    assert re.search(rf"abnormal tasks, running_timeout: \d+ task\(s\): .*\b{busy} \(sleepy\)", log)
    assert re.search(rf"abnormal tasks, failed: 1 task\(s\): {failed} \(fails_for_good\)", log)


def test_hung_monitor_stops_neither_rescue_nor_the_next_run(env: Env) -> None:
    assert monitor_timeout(load_settings({"monitor_interval": "1s"}, environ={})) == 5.0
    marker = env.tmp_path / "hang-once"
    process = start(env, 2, extra_env=builtins(GTA_TEST_MONITOR_HANG=str(marker)))
    failed = gta_core.submit(gta_core.OWN_TRANSACTION, "fails_for_good")
    hang = wait_for(lambda: ledger(env, "hang"), 30, "a monitor run to hang in the hook")[0]
    assert hang["kind"] == "failed" and failed in hang["ids"]
    hung = [entry["id"] for entry in ledger(env, "started gta_monitor") if entry["pid"] == hang["pid"]][-1]

    # the supervisors rescue expired leases on their own, whatever the monitor does
    stray = make(env, "pending", queue="nobody-serves-this")
    assert [task.id for task in env.store.lease("vanishing-owner", ("nobody-serves-this",), 1, 0.5)] == [stray]
    rescued = wait_for(lambda: (current := row(env, stray))["status"] == "pending" and current, 15,
                       "the supervisor to rescue the expired lease")
    assert rescued["last_error"].startswith("lease expired") and rescued["attempts"] == 1
    assert (row(env, hung)["status"], row(env, hung)["attempts"]) == ("running", 1), "the monitor stopped hanging"

    # the next slots run on the other worker, and report what the hung run never did
    assert wait_report(env, "failed", failed)["pid"] != hang["pid"]
    assert wait_report(env, "rescued", stray)["pid"] != hang["pid"]

    # the hung run is killed at its timeout, and its retry runs to the end
    wait_log(process, f"killed for overrunning tasks [{hung}]", timeout=30)
    final = wait_for(lambda: (current := row(env, hung))["status"] in ("succeeded", "failed") and current, 30,
                     "the hung monitor task to end")
    assert (final["status"], final["attempts"]) == ("succeeded", 2)
    assert "TaskTimeout" in final["last_error"]


def test_monitor_and_cleanup_can_be_disabled_or_replaced(env: Env) -> None:
    def runtime(**settings: Any) -> Runtime:
        return Runtime(load_settings({"database_url": env.db_url, "table": env.table, **settings}, environ={}))

    builtin = runtime(disable_plugins="")
    assert {builtin.plugins.registry.owners[key] for key in ("gta_monitor", "gta_cleanup")} == {"monitor", "cleanup"}
    assert {(job.name, job.key) for job in collect_periodics(builtin)} == {("monitor", "gta_monitor"),
                                                                            ("cleanup", "gta_cleanup")}
    none = runtime(disable_plugins="monitor,cleanup")
    assert not {"gta_monitor", "gta_cleanup"} & set(none.plugins.registry.tasks)
    assert collect_periodics(none) == []
    replaced = runtime(disable_plugins="monitor", plugins="tests.handlers.monitor_replacement")
    assert replaced.plugins.registry.owners["gta_monitor"] == "tests.handlers.monitor_replacement"
    assert {(job.name, job.every) for job in collect_periodics(replaced)} == {("monitor", 5.0),
                                                                             ("cleanup", 300.0)}
    with pytest.raises(gta_core.PluginError, match="gta_monitor"):
        build_plugins(get_runtime(), ["tests.handlers.monitor_replacement"])  # both: two tasks with one key


# -- cleanup -------------------------------------------------------------------------------------------
def test_cleanup_deletes_old_finished_tasks_in_batches_and_nothing_else(env: Env) -> None:
    old = [make(env, status, key="always_fails" if status == "failed" else "record")
           for status in ("succeeded", "failed", "cancelled", "succeeded", "succeeded")]
    young = make(env, "succeeded")
    running = make(env, "running")
    pending = make(env, "pending")
    age(env, old, "finished_at", 8 * DAY)
    age(env, [young], "finished_at", 6 * DAY)
    age(env, [running, pending], "finished_at", 30 * DAY)  # status decides, not the timestamp alone

    assert delete_expired(env.store, 7 * DAY, batch=2, budget=60) == (5, 3)  # 2 + 2 + 1
    assert env.statuses([*old, young, running, pending]) == {young: "succeeded", running: "running",
                                                            pending: "pending"}
    assert delete_expired(env.store, 7 * DAY, batch=2, budget=60) == (0, 0)
    assert delete_expired(env.store, 5 * DAY, batch=10, budget=60) == (1, 1)
    with pytest.raises(ValueError):
        env.store.delete_finished(0, 10, ("running",))


def test_cleanup_task_empties_history_while_tasks_keep_running(env: Env) -> None:
    finished_long_ago(env, 3000)
    process = start(env, 2, "--threads", "2", extra_env=builtins(
        monitor="1h", cleanup="1s", disable="monitor", GTA_CLEANUP_BATCH="100"))
    fresh = gta_core.submit_many(gta_core.OWN_TRANSACTION, [("record", {"n": n}) for n in range(200)])
    wait_for(lambda: count(env, "queue = 'archive'") == 0, 60, "cleanup to delete the old tasks")
    assert env.wait_final(fresh) == {task_id: "succeeded" for task_id in fresh}
    assert env.runs_by_task() == {task_id: 1 for task_id in fresh}

    def deleted_so_far() -> list[tuple[int, int]]:
        return [(int(rows), int(batches)) for rows, batches in
                re.findall(r"cleanup deleted (\d+) finished task\(s\) older than 604800s in (\d+) batch\(es\) "
                           r"of at most 100,", process.log())]
    # a cleanup run logs once its last batch has committed: its line may trail the empty table
    wait_for(lambda: sum(rows for rows, _ in deleted_so_far()) >= 3000, 30, "cleanup to log its deletions")
    log, deleted = process.log(), deleted_so_far()
    assert sum(rows for rows, _ in deleted) == 3000, deleted
    assert sum(batches for _, batches in deleted) >= 30
    for text in ("Traceback", "deadlock", "Deadlock", "Lock wait", "database is locked"):
        assert text not in log


def test_three_supervisors_clean_once_per_slot_while_leasing_goes_on(env: Env, backend: str) -> None:
    if backend != "postgres":
        pytest.skip("PostgreSQL only, by design: one 100,000-row cluster run is enough; SQLite and MariaDB run "
                    "test_cleanup_task_empties_history_while_tasks_keep_running")
    total = 100_000
    env.store._write(
        f"INSERT INTO {env.table} (key, queue, status, priority, args, run_at, attempts, max_attempts, "
        "created_at, updated_at, started_at, finished_at) "
        "SELECT 'record', 'archive', 'succeeded', 0, '{}', old, 1, 3, old, old, old, old "
        "FROM generate_series(1, %s), (SELECT (now() AT TIME ZONE 'UTC') - INTERVAL '30 days' AS old) AS t",
        (total,))
    variables = builtins(monitor="1h", cleanup="1s", disable="monitor", GTA_CLEANUP_BATCH="1000")
    supervisors = [env.supervisor(1, "--threads", "2", extra_env=variables, wait_ready=False) for _ in range(3)]
    for process in supervisors:
        wait_log(process, SERVING)

    fresh: list[int] = []
    mid: set[int] = set()  # submitted after the cleanup had begun
    during: set[int] = set()  # of those, seen succeeded while old rows were still left
    seen: list[int] = []

    def step() -> bool:
        remaining = count(env, "queue = 'archive'")
        seen.append(remaining)
        if remaining:
            during.update(task_id for task_id, status in env.statuses(sorted(mid)).items()
                          if status == "succeeded")
        task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": len(fresh)})
        fresh.append(task_id)
        if 0 < remaining < total:
            mid.add(task_id)
        return remaining == 0
    wait_for(step, 60, "cleanup to delete 100,000 old tasks", interval=0.02)

    steps = sorted({remaining for remaining in seen if 0 < remaining < total}, reverse=True)
    assert len(steps) >= 5, f"the table did not shrink in batches: {steps}"
    assert during, "no task completed while the cleanup ran"
    assert env.wait_final(fresh) == {task_id: "succeeded" for task_id in fresh}
    assert env.runs_by_task() == {task_id: 1 for task_id in fresh}

    def cleanups() -> list[dict[str, Any]]:
        return env.store.list_tasks(key="gta_cleanup", limit=100)
    wait_for(lambda: len([task for task in cleanups() if task["status"] == "succeeded"]) >= 10, 60,
             "ten cleanup slots")
    done = [task for task in cleanups() if task["status"] == "succeeded"]
    slots = sorted(int(task["dedupe_key"].rsplit(":", 1)[1]) for task in done)
    assert len(slots) == len(set(slots)) and slots[-1] - slots[0] >= 9
    runs: dict[int, int] = {}
    for entry in ledger(env, "started gta_cleanup"):
        runs[entry["id"]] = runs.get(entry["id"], 0) + 1
    assert all(runs.get(task["id"]) == 1 and task["attempts"] == 1 for task in done), (runs, done)

    deleted = 0
    for process in supervisors:
        log = process.log()
        deleted += sum(int(rows) for rows in re.findall(r"cleanup deleted (\d+) finished task\(s\)", log))
        for text in ("Traceback", "deadlock", "could not"):
            assert text not in log, text
    assert deleted == total
