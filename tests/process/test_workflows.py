"""Results, groups and chains on every configured database, through real supervisors.

Handlers live in tests/handlers/workflow_tasks.py (plugin ``tests.handlers.workflow_tasks``) and write the ledger,
so a callback's runs are counted across processes without asking the database under test.
"""
from __future__ import annotations

import json
import os
import signal
from typing import Any

import pytest

import gta_core
from gta_core import OWN_TRANSACTION, TaskRequest
from gta_core.admin import rerun_tasks
from gta_core.config import load_settings
from gta_core.dashboard.overview import whole_table
from gta_core.metrics.database_gauges import read_stats

from ..support.cli import gta, ok
from ..support.helpers import Env, wait_for, wait_log
from ..support.supervisors import SERVING, stop

PLUGINS = "tests.handlers.tasks,tests.handlers.workflow_tasks"


@pytest.fixture
def wenv(env: Env, monkeypatch: pytest.MonkeyPatch) -> Env:
    """`env` with this file's handlers loaded here and in every supervisor started later."""
    return env.with_plugins(monkeypatch, PLUGINS)


def start(env: Env, workers: int = 2, extra: dict[str, str] | None = None) -> Any:
    process = env.supervisor(workers, extra_env=extra, wait_ready=False)
    wait_log(process, SERVING, workers)
    return process


def entries(env: Env, phase: str) -> list[dict[str, Any]]:
    return [entry for entry in env.ledger_entries() if entry["phase"] == phase]


def group_rows(env: Env) -> list[tuple[Any, ...]]:
    return list(env.store._execute(f"SELECT kind, total, remaining, callback_id FROM {env.table}_groups "
                                   "ORDER BY id").fetchall())


# -- results -----------------------------------------------------------------------------------
def test_result_round_trip_wait_and_show(wenv: Env) -> None:
    ids = gta_core.submit_many(OWN_TRANSACTION, [
        TaskRequest("square", {"n": 7}), TaskRequest("echo", {"value": {"a": [1, "é", None], "b": 2.5}}),
        TaskRequest("echo", {"value": None})])
    later = gta_core.submit(OWN_TRANSACTION, "square", {"n": 1}, delay=3600)
    assert gta_core.result(ids[0]) == gta_core.TaskResult("pending")
    with pytest.raises(TimeoutError, match="still pending"):
        gta_core.wait(later, timeout=0.3)
    process = start(wenv, 1)
    assert gta_core.wait(ids[0], timeout=30) == gta_core.TaskResult("succeeded", 49)
    assert gta_core.wait(ids[1], timeout=30).value == {"a": [1, "é", None], "b": 2.5}
    done = gta_core.wait(ids[2], timeout=30)
    assert done is not None and done.succeeded and done.value is None
    assert gta_core.result(ids[0]) == gta_core.TaskResult("succeeded", 49)
    assert gta_core.result(10**12) is None and gta_core.wait(10**12, timeout=1) is None
    shown = gta("show", str(ids[0]))
    assert shown.returncode == 0 and "result: 49" in shown.stdout, shown.stdout
    shown_json = gta("show", str(ids[1]), "--json")
    assert shown_json.returncode == 0, shown_json.stderr
    as_json = json.loads(shown_json.stdout)
    assert as_json["result"] == {"a": [1, "é", None], "b": 2.5}
    gta_core.cancel(later)
    assert gta_core.wait(later, timeout=5) == gta_core.TaskResult("cancelled", None, "cancelled")
    stop(process)


def test_result_too_large_or_not_json_fails_the_task(wenv: Env) -> None:
    big = gta_core.submit(OWN_TRANSACTION, "echo", {"value": "x" * 300})
    fits = gta_core.submit(OWN_TRANSACTION, "echo", {"value": "x" * 50})
    odd = gta_core.submit(OWN_TRANSACTION, "unserializable")
    process = start(wenv, 1, {"GTA_RESULT_MAX_BYTES": "100"})
    failed = gta_core.wait(big, timeout=30)
    assert failed is not None and failed.status == "failed" and "result_max_bytes (100)" in (failed.error or "")
    assert gta_core.wait(fits, timeout=30) == gta_core.TaskResult("succeeded", "x" * 50)
    odd_result = gta_core.wait(odd, timeout=30)
    assert odd_result is not None and odd_result.status == "failed" and "not JSON" in (odd_result.error or "")
    assert wenv.store.get(big)["result"] is None
    stop(process)


# -- groups ------------------------------------------------------------------------------------
def test_group_of_500_on_two_supervisors_fires_its_callback_once(wenv: Env) -> None:
    first, second = start(wenv, 2), start(wenv, 2)
    members = [TaskRequest("square", {"n": n, "pause": 0.002}) for n in range(495)]
    members += [TaskRequest("refuse", {"n": n}) for n in range(5)]
    with wenv.runtime.db.atomic() as tx:
        made = gta_core.group(tx, members, on_complete=TaskRequest("collect", {"label": "500"}))
    assert len(made.ids) == 500 and made.callback is not None
    done = gta_core.wait(made.callback, timeout=120)
    assert done == gta_core.TaskResult("succeeded", 500)
    calls = entries(wenv, "callback")
    assert len(calls) == 1, calls
    outcomes = calls[0]["group"]
    assert [o["id"] for o in outcomes] == sorted(made.ids)
    by_id = {o["id"]: o for o in outcomes}
    for task_id, request in zip(made.ids, members, strict=True):
        outcome = by_id[task_id]
        if request.key == "square":
            assert outcome == {"id": task_id, "status": "succeeded", "result": request.args["n"] ** 2}
        else:
            assert outcome["status"] == "failed" and "refuses" in outcome["error"]
    pids = {entry["pid"] for entry in entries(wenv, "run")}
    assert len(pids) >= 2  # the members really ran in several workers
    assert group_rows(wenv) == [("group", 500, 0, made.callback)]
    stop(first), stop(second)
    assert len(entries(wenv, "callback")) == 1


def test_sigkill_of_the_worker_running_the_last_member_still_fires_once(wenv: Env) -> None:
    flag = str(wenv.tmp_path / "died")
    members = [TaskRequest("square", {"n": n}) for n in range(3)] + [TaskRequest("die"),
                                                                     TaskRequest("die_once", {"flag": flag, "n": 9})]
    made = gta_core.group(OWN_TRANSACTION, members, on_complete=TaskRequest("collect"))
    process = start(wenv, 2)
    assert gta_core.wait(made.callback, timeout=60) == gta_core.TaskResult("succeeded", 5)
    runs = [entry for entry in entries(wenv, "run") if entry["id"] == made.ids[-1]]
    assert len(runs) == 2 and runs[0]["pid"] != runs[1]["pid"]  # killed once, run again elsewhere
    calls = entries(wenv, "callback")
    assert len(calls) == 1
    outcomes = {o["id"]: o for o in calls[0]["group"]}
    assert {task_id: outcomes[task_id]["result"] for task_id in made.ids} == dict(
        zip(made.ids, [0, 1, 4, None, 9], strict=True))
    # the member whose only attempt died with its worker was failed by the janitor, and counted
    assert outcomes[made.ids[3]]["status"] == "failed" and "WorkerDied" in outcomes[made.ids[3]]["error"]
    stop(process)
    assert len(entries(wenv, "callback")) == 1


def test_a_member_failed_by_rescue_counts(wenv: Env) -> None:
    made = gta_core.group(OWN_TRANSACTION, [TaskRequest("freeze"), TaskRequest("square", {"n": 2})],
                          on_complete=TaskRequest("collect"))
    process = start(wenv, 2, {"GTA_LEASE_TIMEOUT": "1.5", "GTA_SCAN_INTERVAL": "0.5"})
    (run,) = wait_for(lambda: [entry for entry in entries(wenv, "run") if entry["id"] == made.ids[0]], 30,
                      "the member to start")
    os.kill(run["pid"], signal.SIGSTOP)  # frozen mid-task: its heartbeats stop, its lease expires
    try:
        assert gta_core.wait(made.callback, timeout=60) == gta_core.TaskResult("succeeded", 2)
    finally:
        os.kill(run["pid"], signal.SIGCONT)  # its late success is fenced off: the member stays failed
    (call,) = entries(wenv, "callback")
    frozen = call["group"][0]
    assert frozen["status"] == "failed" and frozen["error"].startswith("lease expired"), frozen
    wait_log(process, f"lease on task {made.ids[0]} was lost before its outcome was recorded")
    assert len(entries(wenv, "callback")) == 1 and gta_core.result(made.ids[0]).status == "failed"  # type: ignore[union-attr]
    stop(process)


def test_a_handler_creates_a_group_with_its_success(wenv: Env) -> None:
    parent = gta_core.submit(OWN_TRANSACTION, "fan_out", {"count": 3})
    process = start(wenv, 1)
    callback = wait_for(lambda: next((row["id"] for row in wenv.store.list_tasks(key="collect")), None), 30,
                        "the callback row")
    assert gta_core.wait(callback, timeout=30) == gta_core.TaskResult("succeeded", 3)
    members = wenv.store.list_tasks(key="square")
    assert len(members) == 3 and {row["parent_id"] for row in members} == {parent}
    assert entries(wenv, "callback")[0]["label"] == "from handler"
    chained = gta_core.submit(OWN_TRANSACTION, "start_chain")
    steps = wait_for(lambda: (rows := wenv.store.list_tasks(key="add")) and len(rows) == 2 and rows, 30,
                     "the chain's steps")
    assert {row["parent_id"] for row in steps} == {chained}
    assert gta_core.wait(max(row["id"] for row in steps), timeout=30) == gta_core.TaskResult("succeeded", 5)
    stop(process)


def test_cancel_of_pending_members_releases_the_callback(wenv: Env) -> None:
    made = gta_core.group(OWN_TRANSACTION, [TaskRequest("square", {"n": n}, delay=3600) for n in range(2)],
                          on_complete=TaskRequest("collect"))
    gta_core.cancel(made.ids[0])
    assert wenv.store.get(made.callback)["status"] == "waiting"
    assert group_rows(wenv)[0][2] == 1
    gta_core.cancel(made.ids)  # the first again (already final: not counted twice) and the second
    callback = wenv.store.get(made.callback)
    assert callback["status"] == "pending"
    assert [o["status"] for o in json.loads(callback["args"])["group"]] == ["cancelled", "cancelled"]
    assert group_rows(wenv)[0][2] == 0


def test_rerun_member_counts_again_and_cleanup_keeps_open_groups(wenv: Env) -> None:
    made = gta_core.group(OWN_TRANSACTION, [TaskRequest("refuse"), TaskRequest("square", {"n": 1}, delay=3600)],
                          on_complete=TaskRequest("collect"))
    process = start(wenv, 1)
    wait_for(lambda: wenv.store.get(made.ids[0])["status"] == "failed", 30, "the refusing member to fail")
    assert group_rows(wenv)[0][2] == 1
    assert wenv.store.delete_finished(0.001, 100) == 0  # the open group's failed member is kept
    rerun_tasks(wenv.runtime, [made.ids[0]])  # unfinished again: the group waits for it
    wait_for(lambda: len(entries(wenv, "run")) == 2, 30, "the re-run")
    wait_for(lambda: wenv.store.get(made.ids[0])["status"] == "failed", 30, "the member to fail again")
    assert group_rows(wenv)[0][2] == 1 and wenv.store.get(made.callback)["status"] == "waiting"
    gta_core.cancel(made.ids[1])
    assert gta_core.wait(made.callback, timeout=30) == gta_core.TaskResult("succeeded", 2)
    assert len(entries(wenv, "callback")) == 1
    stop(process)
    assert wenv.store.delete_finished(0.001, 100) == 3  # both members and the callback
    assert group_rows(wenv) == []


def test_waiting_callbacks_show_in_list_stats_metrics_and_the_dashboard(wenv: Env) -> None:
    made = gta_core.group(OWN_TRANSACTION, [TaskRequest("square", {"n": 1}, delay=3600)],
                          on_complete=TaskRequest("collect", queue="callbacks"))
    listed = json.loads(ok("list", "--status", "waiting", "--json"))
    assert [task["id"] for task in listed] == [made.callback]
    stats = json.loads(ok("stats", "--json"))
    assert [(line["queue"], line["waiting"]) for line in stats["queues"]] == [("callbacks", 1), ("default", 0)]
    assert stats["all"]["waiting"] == 1 and "WAITING" in ok("stats")
    assert read_stats(wenv.store, load_settings()).depth[("callbacks", "waiting")] == 1
    counts = wenv.store.counts()
    counted = str(whole_table(counts, max_queues=100))  # the overview's tasks by status and by queue
    assert 'href="/tasks?status=waiting"' in counted


def test_group_is_atomic_with_the_submitting_transaction(wenv: Env) -> None:
    class Boom(Exception):
        pass
    with pytest.raises(Boom), wenv.runtime.db.atomic() as tx:
        gta_core.group(tx, [TaskRequest("square", {"n": 1})], on_complete=TaskRequest("collect"))
        raise Boom
    assert wenv.store.list_tasks() == [] and group_rows(wenv) == []


def test_bad_groups_are_refused_before_anything_is_written(wenv: Env) -> None:
    bad = [
        ([TaskRequest("square", {"n": 1}, dedupe_key="k")], TaskRequest("collect"), "dedupe_key"),
        ([TaskRequest("square", {"n": 1})], TaskRequest("square", {"n": 1}), "group"),
        ([TaskRequest("square", {"n": 1})], TaskRequest("collect", {"group": []}), "filled in by GTA"),
        ([TaskRequest("nope")], TaskRequest("collect"), "nope"),
        (["square"], TaskRequest("collect"), "TaskRequest"),
    ]
    for members, callback, fragment in bad:
        with pytest.raises(gta_core.InvalidArguments, match=fragment) if fragment != "nope" else \
                pytest.raises(gta_core.GTAError, match=fragment):
            gta_core.group(OWN_TRANSACTION, members, on_complete=callback)
    with pytest.raises(gta_core.InvalidArguments, match="at least one step"):
        gta_core.chain(OWN_TRANSACTION, [])
    assert wenv.store.list_tasks() == [] and group_rows(wenv) == []


def test_empty_group_runs_its_callback_at_once(wenv: Env) -> None:
    made = gta_core.group(OWN_TRANSACTION, [], on_complete=TaskRequest("collect"))
    row = wenv.store.get(made.callback)
    assert row["status"] == "pending" and json.loads(row["args"])["group"] == []


# -- chains ------------------------------------------------------------------------------------
def test_chain_passes_results_and_a_failed_step_cancels_the_rest(wenv: Env) -> None:
    good = gta_core.chain(OWN_TRANSACTION, [TaskRequest("add", {"amount": 1}), TaskRequest("add", {"amount": 10}),
                                            TaskRequest("add", {"amount": 100})])
    broken = gta_core.chain(OWN_TRANSACTION, [TaskRequest("square", {"n": 3}), TaskRequest("refuse"),
                                              TaskRequest("add"), TaskRequest("add")])
    assert [wenv.store.get(task_id)["status"] for task_id in good.ids] == ["pending", "waiting", "waiting"]
    process = start(wenv, 2)
    assert gta_core.wait(good.ids[-1], timeout=30) == gta_core.TaskResult("succeeded", 111)
    previous = {entry["id"]: entry["previous"] for entry in entries(wenv, "run") if entry["id"] in good.ids}
    assert previous == {good.ids[0]: None, good.ids[1]: 1, good.ids[2]: 11}
    last = gta_core.wait(broken.ids[-1], timeout=30)
    assert last is not None and last.status == "cancelled"
    assert [gta_core.result(task_id).status for task_id in broken.ids] == [  # type: ignore[union-attr]
        "succeeded", "failed", "cancelled", "cancelled"]
    assert f"task {broken.ids[1]}, ended failed" in wenv.store.get(broken.ids[2])["last_error"]
    ran = {entry["id"] for entry in entries(wenv, "run")}
    assert not ran & set(broken.ids[2:])
    stop(process)
