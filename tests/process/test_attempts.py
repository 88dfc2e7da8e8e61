"""The attempt log, on every configured database: what each way an attempt ends leaves in a
task's history, read through `gta_core.attempts`, `TaskState.attempt_log` and ``gta show``.

The process tests run real supervisors, kill and freeze real workers, and tie each attempt to
the worker that ran it through the ledger (the worker's pid) and the supervisor's log (its
lease owner); the store tests drive the writes directly.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from typing import Any

import pytest

import gta_core
from gta_core import Attempt
from gta_core.db.connect import open_database
from gta_core.errors import SchemaError
from gta_core.outcomes import Action, Outcome
from gta_core.queues import actor
from gta_core.store.task_store import TaskStore

from ..support.cli import ok
from ..support.helpers import Env, SupervisorProcess, wait_for, wait_log
from ..support.rows import OWNER, age, make

SERVING = "serving queues"


def start(env: Env, workers: int, *args: str) -> SupervisorProcess:
    process = env.supervisor(workers, *args)
    wait_log(process, SERVING, workers)
    return process


def stop(process: SupervisorProcess) -> None:
    process.signal(signal.SIGTERM)
    assert process.wait(30) == 0


def owners(process: SupervisorProcess) -> dict[int, str]:
    """Worker pid → its lease owner, from the supervisor's log."""
    found = re.findall(r"worker \d+ started \(pid (\d+), lease owner (\S+)\)", process.log())
    return {int(pid): owner for pid, owner in found}


def runs(env: Env, task_id: int, phase: str = "run") -> list[dict[str, Any]]:
    return [entry for entry in env.ledger_entries() if entry["id"] == task_id and entry["phase"] == phase]


def history(task_id: int) -> list[Attempt]:
    found = gta_core.attempts(task_id)
    assert found is not None, f"task {task_id} has no row"
    return found


def outcomes(task_id: int) -> list[str]:
    return [entry.outcome for entry in history(task_id)]


# -- with real supervisors ---------------------------------------------------------------------
def test_two_failures_then_a_success_are_three_attempts_with_their_errors_and_workers(env: Env) -> None:
    process = start(env, 2)
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "flaky", {"failures": 2})
    assert env.wait_final([task_id], 60) == {task_id: "succeeded"}
    attempts = history(task_id)
    assert [(entry.number, entry.outcome) for entry in attempts] == [(1, "retried"), (2, "retried"), (3, "succeeded")]
    by_pid = owners(process)
    ran = runs(env, task_id)
    assert [entry.worker for entry in attempts] == [by_pid[run["pid"]] for run in ran]
    for number, entry in enumerate(attempts[:2], 1):
        assert entry.exception_class_path == "builtins.RuntimeError"  # its class: the text says "RuntimeError"
        assert entry.error == f"flaky failure on attempt {number}"
        assert entry.traceback and "in flaky" in entry.traceback
        assert entry.traceback.rstrip().endswith(f"RuntimeError: flaky failure on attempt {number}")
        assert entry.retry_delay is not None and 0 < entry.retry_delay <= 1  # GTA_RETRY_CAP=1 (conftest)
    final = attempts[2]
    assert final.exception_class_path is None and final.retry_delay is None and final.actor is None
    for entry in attempts:
        assert entry.host == socket.gethostname() and entry.worker and f":{process.pid}." in entry.worker
        assert entry.started_at and entry.ended_at and entry.started_at <= entry.ended_at
        assert entry.duration is not None and 0 <= entry.duration < 30
    assert attempts[0].ended_at <= attempts[1].started_at and attempts[1].ended_at <= final.started_at  # type: ignore[operator]
    state = gta_core.status(task_id)
    assert state is not None and state.attempt_log() == attempts
    store = env.store  # the success itself wrote no entry: the row holds it
    logged = f"SELECT COUNT(*) FROM {store.table}_attempts WHERE task_id = ?"
    assert store.db.execute_sql(store.sql.dialect.fix(logged), (task_id,)).fetchone()[0] == 2
    stop(process)

    shown = ok("show", str(task_id))
    lines = [line for line in shown.splitlines() if re.match(r"\s*\d+\s+(retried|succeeded)\s", line)]
    assert len(lines) == 3 and "builtins.RuntimeError: flaky failure on attempt 1" in lines[0], shown
    assert "retry in" in lines[0] and by_pid[ran[2]["pid"]] in lines[2], shown
    logged = json.loads(ok("show", str(task_id), "--json"))["attempt_log"]
    assert [entry["outcome"] for entry in logged] == ["retried", "retried", "succeeded"]
    assert logged[0]["exception_class_path"] == "builtins.RuntimeError" and "in flaky" in logged[0]["traceback"]


def test_a_sigkilled_worker_leaves_a_worker_died_attempt_and_a_cancel_ends_the_next(env: Env) -> None:
    process = start(env, 2)
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "sleepy", {"seconds": 60})
    first = wait_for(lambda: runs(env, task_id, "start"), 30, "the task to start")[0]
    killed_owner = owners(process)[first["pid"]]
    os.kill(first["pid"], signal.SIGKILL)
    second = wait_for(lambda: (found := runs(env, task_id, "start")) and len(found) == 2 and found[1], 60,
                      "the task to run again")
    died = history(task_id)[0]
    assert (died.number, died.outcome, died.worker) == (1, "worker_died", killed_owner)
    assert died.exception_class_path == "gta_core.errors.WorkerDied" and "killed by SIGKILL" in (died.error or "")
    assert died.retry_delay is not None and died.started_at and died.ended_at
    assert outcomes(task_id) == ["worker_died", "running"]

    assert gta_core.cancel(task_id, force=True) == {task_id: gta_core.CancelResult(True, "running")}  # the API
    cancelled = history(task_id)[1]  # written with the cancel, in its transaction
    assert (cancelled.number, cancelled.outcome, cancelled.worker) == (2, "cancelled", owners(process)[second["pid"]])
    assert cancelled.actor == actor("api") and cancelled.error == "cancelled (force)" and cancelled.started_at
    wait_log(process, "exited (exit code 4)")  # the forced cancel ended the second worker
    stop(process)
    assert outcomes(task_id) == ["worker_died", "cancelled"]  # nothing more: its run ended fenced off


def test_a_frozen_worker_leaves_a_rescued_attempt_and_its_late_success_is_fenced_off(env: Env) -> None:
    process = start(env, 2, "--lease-timeout", "1.5")
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "sleepy", {"seconds": 2})
    first = wait_for(lambda: runs(env, task_id, "start"), 30, "the task to start")[0]
    frozen_owner = owners(process)[first["pid"]]
    os.kill(first["pid"], signal.SIGSTOP)  # its heartbeats stop; its lease expires and is rescued
    try:
        assert env.wait_final([task_id], 60) == {task_id: "succeeded"}
    finally:
        os.kill(first["pid"], signal.SIGCONT)  # its late success write must be fenced off
    wait_log(process, f"lease on task {task_id} was lost before its outcome was recorded")
    second = runs(env, task_id, "start")[1]
    attempts = history(task_id)
    assert [(entry.number, entry.outcome) for entry in attempts] == [(1, "rescued"), (2, "succeeded")]
    rescued, succeeded = attempts
    assert rescued.worker == frozen_owner and rescued.exception_class_path == "gta_core.errors.LeaseExpired"
    assert (rescued.error or "").startswith("lease expired") and rescued.retry_delay is not None
    assert succeeded.worker == owners(process)[second["pid"]] != frozen_owner
    stop(process)
    assert history(task_id) == attempts


def test_operator_retries_and_cancels_are_logged_with_who_did_them(env: Env) -> None:
    process = start(env, 1)
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "fails_for_good")
    assert env.wait_final([task_id], 30) == {task_id: "failed"}
    ok("retry", str(task_id))
    wait_for(lambda: len(runs(env, task_id)) == 2 and env.statuses([task_id]) == {task_id: "failed"} or None, 30,
             "the rerun to fail again")
    attempts = history(task_id)
    assert [(entry.number, entry.outcome) for entry in attempts] == [(1, "failed"), (1, "rerun"), (1, "failed")]
    assert attempts[0].exception_class_path == "gta_core.errors.Fail" and attempts[0].retry_delay is None
    rerun = attempts[1]
    assert rerun.actor == actor("cli") and rerun.is_action and rerun.worker is None and rerun.ended_at is not None
    stop(process)

    later = gta_core.submit(gta_core.OWN_TRANSACTION, "record", delay=3600)
    ok("cancel", str(later))
    (cancel,) = history(later)
    assert (cancel.outcome, cancel.number, cancel.worker, cancel.is_action) == ("cancelled", 0, None, True)
    assert cancel.actor == actor("cli") and cancel.error == "cancelled"


# -- the store's writes ------------------------------------------------------------------------
def failure(message: str = "boom") -> Outcome:
    try:
        raise KeyError(message)
    except KeyError as exc:
        return Outcome(Action.RETRY, 0.5, exc)


def test_a_write_refused_by_its_fence_logs_nothing(env: Env) -> None:
    task_id = make(env, "running")
    outcome = failure()
    assert not env.store.retry("someone-else", task_id, 0.5, outcome.error_text, attempt=1, entry=outcome.entry())
    assert not env.store.fail(OWNER, task_id, "late", attempt=2, entry=outcome.entry())
    assert not env.store.release_lease(OWNER, task_id, 7)
    assert outcomes(task_id) == ["running"]
    assert env.store.retry(OWNER, task_id, 0.5, outcome.error_text, attempt=1, entry=outcome.entry())
    (entry,) = history(task_id)
    assert (entry.outcome, entry.worker, entry.exception_class_path, entry.retry_delay) == (
        "retried", OWNER, "builtins.KeyError", 0.5)


def test_a_task_keeps_its_first_and_last_entries_and_counts_those_dropped(env: Env) -> None:
    env.store.attempts_kept = 2
    task_id = make(env, "pending")
    for attempt in range(1, 8):
        (task,) = env.store.lease(OWNER, ("default",), 1, 60.0)
        outcome = failure(f"attempt {attempt}")
        assert env.store.retry(OWNER, task.id, 0.0, outcome.error_text, attempt=task.attempts, entry=outcome.entry())
    (task,) = env.store.lease(OWNER, ("default",), 1, 60.0)
    attempts = history(task_id)
    assert [(entry.seq, entry.dropped_before, entry.outcome) for entry in attempts] == [
        (1, 0, "retried"), (2, 0, "retried"), (6, 3, "retried"), (7, 0, "retried"), (8, 0, "running")]
    assert [entry.error for entry in attempts[:4]] == ["'attempt 1'", "'attempt 2'", "'attempt 6'", "'attempt 7'"]
    assert "3 entries dropped" in ok("show", str(task_id))


def test_cleanup_purge_and_a_deleting_success_take_the_entries_with_the_task(env: Env) -> None:
    store = env.store
    entries = f"SELECT COUNT(*) FROM {store.table}_attempts WHERE task_id = ?"

    def logged(task_id: int) -> int:
        return int(store.db.execute_sql(store.sql.dialect.fix(entries), (task_id,)).fetchone()[0])

    old = make(env, "cancelled")
    kept = make(env, "cancelled")
    age(env, [old], "finished_at", 3 * 86400)
    assert logged(old) == logged(kept) == 1
    ok("purge", "--older-than", "1d")
    assert store.get(old) is None and logged(old) == 0 and logged(kept) == 1

    deleted = make(env, "running")
    assert store.release_lease(OWNER, deleted, 1, "handed back for the test")
    (task,) = store.lease(OWNER, ("default",), 1, 60.0)
    assert logged(deleted) == 1
    assert store.complete(OWNER, task.id, delete=True, attempt=task.attempts)  # clean_succeeded
    assert store.get(deleted) is None and logged(deleted) == 0 and gta_core.attempts(deleted) is None


def test_releases_are_logged_as_released_with_why(env: Env) -> None:
    ids = [make(env, "pending") for _ in range(3)]
    leased = env.store.lease(OWNER, ("default",), 3, 60.0)
    assert sorted(task.id for task in leased) == ids
    assert env.store.release(OWNER, ids[:1], "stopping") == 1
    assert env.store.release(OWNER, reason="worker gone") == 2  # every lease of the owner
    for task_id, why in zip(ids, ["stopping", "worker gone", "worker gone"], strict=True):
        (entry,) = history(task_id)
        assert (entry.outcome, entry.number, entry.worker, entry.error) == ("released", 1, OWNER, why)
        assert env.store.get(task_id)["attempts"] == 0  # type: ignore[index]  # not counted


def test_an_unmigrated_log_table_is_a_schema_error_naming_migrate(env: Env) -> None:
    env.runtime.db.execute_sql(f"DROP TABLE {env.table}_attempts")
    with pytest.raises(SchemaError, match="attempt log table .* run `gta migrate`"):
        env.store.require_schema()
    task_id = make(env, "pending")
    with pytest.raises(SchemaError, match="run `gta migrate`"):
        gta_core.cancel(task_id)
    assert env.statuses([task_id]) == {task_id: "pending"}  # nothing was written
    env.store.migrate()
    gta_core.cancel(task_id)
    assert outcomes(task_id) == ["cancelled"]


@pytest.mark.parametrize("write", ["retry", "fail", "release_lease", "release"])
def test_a_stale_write_and_its_entry_never_lock_the_new_holders_row(env: Env, write: str) -> None:
    """A worker whose lease was taken over writes its outcome late, from a host then cut off with
    that transaction open: the new holder must still renew the row at once, and the stale write
    logs nothing (on MariaDB a locking read, or an update that reads the row by id, keeps its
    lock until the transaction ends)."""
    store = env.store
    if store.dialect == "sqlite":
        pytest.skip("SQLite locks the whole database, never one row")
    task_id = make(env, "running")
    age(env, [task_id], "lease_expires_at", 3600)
    assert [task.id for task in store.rescue_expired()] == [task_id]
    assert [task.id for task in store.lease("new-holder", ("default",), 1, 30.0)] == [task_id]
    stale = {"retry": lambda: store.retry(OWNER, task_id, 1.0, "late", attempt=1),
             "fail": lambda: store.fail(OWNER, task_id, "late", attempt=1),
             "release_lease": lambda: store.release_lease(OWNER, task_id, 1),
             "release": lambda: store.release(OWNER, [task_id])}[write]
    other = TaskStore(open_database(env.db_url), store.table)
    try:
        with store.db.atomic():  # the stale write's transaction, left open
            assert not stale()
            started = time.monotonic()
            assert other.heartbeat("new-holder", [task_id], 30.0) == 1
            took = time.monotonic() - started
        assert took < 0.5, f"the new holder's heartbeat waited {took:.1f}s on the stale write's lock"
    finally:
        other.db.close()
    assert outcomes(task_id) == ["rescued", "running"]
