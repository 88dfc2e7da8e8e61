"""Lock contention without faults: SQLite shared by several supervisors and a submitter
process, and a MariaDB storm of submits, leases and cleanup.

Nothing breaks here on purpose, so the bar is exactly once: every committed task runs once
and succeeds, and "database is locked", a deadlock or a lock wait never reaches a submitter
or a task. A submit in a transaction of its own retries them inside GTA; a submit inside the
caller's transaction may see a deadlock (MySQL/MariaDB abort the whole transaction, which
only the caller can re-run), and then only as a retryable error (`is_retryable`).
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import peewee
import pytest

import gta_core
from gta_core import runtime as runtime_module
from gta_core.db.connect import open_database
from gta_core.db.driver_errors import is_retryable
from gta_core.db.transactions import in_transaction
from gta_plugins.cleanup import delete_expired

from ..support.backends import BACKENDS, NOT_RUN
from ..support.helpers import wait_for
from .harness import ChaosHarness, Report, new_table

pytestmark = pytest.mark.chaos

LEASE = 3.0


def submitter_main(out: str, rounds: int, name: str) -> None:
    """A submitter process: each round submits alone, in a batch, inside its own transaction
    (retrying the whole transaction on a retryable error, as an application must) and with a
    dedupe key that another submitter races for. One JSON line per round: ids and errors."""
    db = runtime_module.get_runtime().db
    with open(out, "a") as log:
        for number in range(rounds):
            tag = f"{name}-{number}"
            entry: dict[str, Any] = {"tag": tag, "ids": [], "errors": [], "retried": 0}
            args = {"seconds": 0.01, "tag": tag}
            try:
                entry["ids"].append(gta_core.submit(gta_core.OWN_TRANSACTION, "chaos_work", args))
                entry["ids"] += gta_core.submit_many(gta_core.OWN_TRANSACTION,
                                                     [gta_core.TaskRequest("chaos_work", args)] * 5)
                entry["ids"].append(gta_core.submit(gta_core.OWN_TRANSACTION,
                                                    "chaos_work", args, dedupe_key=f"storm-{number}"))
                while True:
                    try:
                        with db.atomic():
                            ids = gta_core.submit_many(db, [gta_core.TaskRequest("chaos_work", args)] * 3)
                            ids.append(gta_core.submit(db, "chaos_work", args, order_key=f"k{number % 3}"))
                        entry["ids"] += ids
                        break
                    except peewee.DatabaseError as exc:
                        if not is_retryable(exc):
                            raise
                        entry["retried"] += 1
            except Exception as exc:
                entry["errors"].append(f"{type(exc).__name__}: {exc}")
            entry["t"] = time.time()
            log.write(json.dumps(entry) + "\n")
            log.flush()


@contextlib.contextmanager
def submitters(harness: ChaosHarness, tmp_path: Path, count: int, rounds: int) -> Iterator[None]:
    """``count`` submitter processes on the harness's table, waited for when the block ends;
    their tasks join ``committed``."""
    out = tmp_path / "submitted.jsonl"
    environ = {**os.environ, **harness.environ}
    code = "import sys; from tests.chaos.test_db_storms import submitter_main; " \
           "submitter_main(sys.argv[1], int(sys.argv[2]), sys.argv[3])"
    processes = [subprocess.Popen([sys.executable, "-c", code, str(out), str(rounds), f"s{index}"], env=environ)
                 for index in range(count)]
    try:
        yield
        for process in processes:
            process.wait(60)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(10)
    errors, retried = [], 0
    with open(out) as handle:
        entries = [json.loads(line) for line in handle]
    for entry in entries:
        harness.committed += entry["ids"]
        retried += entry["retried"]
        if entry["errors"]:
            harness.uncertain_tags.add(entry["tag"])
            errors += entry["errors"]
    harness.committed = sorted(set(harness.committed))  # racing dedupe submits share one id
    assert len(entries) == count * rounds, f"{len(entries)} of {count * rounds} rounds reported"
    assert not errors, f"{len(errors)} submit(s) failed: {errors[:5]}"
    print(f"{count} submitter(s) x {rounds} rounds: {len(harness.committed)} tasks, "
          f"{retried} caller transaction(s) re-run after a retryable error")


def exactly_once(report: Report) -> None:
    assert report.succeeded == report.tasks, report.line()
    assert report.executions == report.tasks and report.duplicates == 0, report.line()
    assert report.worker_restarts == 0, report.line()


def test_sqlite_supervisors_and_submitter_share_one_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    harness = ChaosHarness(url, new_table(), tmp_path, backend="sqlite", lease_timeout=LEASE, workers=2,
                           extra_env={"GTA_BATCH": "5"})
    try:
        for _ in range(3):
            harness.supervisor(2)
        with submitters(harness, tmp_path, count=2, rounds=15):
            with harness.stream("chaos_work", {"seconds": 0.01}, batch=4, every=0.05):
                time.sleep(4)
        assert harness.submit_errors == 0, "a submit of the test process failed"
        report = harness.check("db-sqlite-shared-file", within=60)
        exactly_once(report)
    finally:
        harness.close(drop=True)


def _deadlocks(db: peewee.Database) -> int:
    return int(db.execute_sql("SHOW GLOBAL STATUS LIKE 'Innodb_deadlocks'").fetchone()[1])


@pytest.mark.skipif(not BACKENDS["mariadb"], reason=NOT_RUN["mariadb"])
def test_mariadb_storm_of_submit_lease_and_cleanup(tmp_path: Path) -> None:
    url = BACKENDS["mariadb"]
    assert url
    harness = ChaosHarness(url, new_table(), tmp_path, backend="mariadb", lease_timeout=LEASE, workers=3,
                           threads=2, extra_env={"GTA_BATCH": "10", "GTA_PREFETCH": "4"})
    stop = threading.Event()
    deleted: list[int] = []
    cleanup_errors: list[str] = []

    def cleanup() -> None:
        """The cleanup plugin's loop and `gta purge`'s statement, back to back, on rows finished
        over a second ago (so the rows of the storm's last second stay for the final check)."""
        store = harness.runtime.store
        while not stop.is_set():
            try:
                deleted.append(delete_expired(store, 1.0, 20, 1.0)[0])
                deleted.append(in_transaction(store.db, lambda: store.delete_finished(1.0, 50)))
            except Exception as exc:
                cleanup_errors.append(f"{type(exc).__name__}: {exc}")

    try:
        before = _deadlocks(harness.runtime.db)
        for _ in range(2):
            harness.supervisor(3)
        thread = threading.Thread(target=cleanup, name="storm-cleanup", daemon=True)
        thread.start()
        with submitters(harness, tmp_path, count=3, rounds=10):
            with harness.stream("chaos_work", {"seconds": 0.01}, batch=10, every=0.05):
                time.sleep(3)
        stop.set()
        thread.join(30)
        harness.submit("chaos_work", [{"seconds": 0.01}] * 50)  # the last ones stay: the final check reads them

        def settled() -> bool:  # every task final, or deleted by cleanup (which deletes only final rows)
            statuses = harness.runtime.store.statuses(harness.committed)
            return set(statuses.values()) <= {"succeeded", "failed", "cancelled"}
        wait_for(settled, 60, "every storm task to be final or cleaned up")
        assert harness.submit_errors == 0, "a submit of the test process failed"
        assert not cleanup_errors, cleanup_errors[:5]
        present = set(harness.runtime.store.statuses(harness.committed))
        gone = [task_id for task_id in harness.committed if task_id not in present]
        runs: dict[int, int] = {}
        for execution in harness.executions():
            runs[execution.task_id] = runs.get(execution.task_id, 0) + (execution.outcome == "ok")
        assert all(runs.get(task_id) == 1 for task_id in gone), "cleanup deleted a task that did not run once"
        report = harness.check("db-mariadb-storm", ids=sorted(present), within=60)
        storm = _deadlocks(harness.runtime.db) - before
        print(f"{len(gone)} finished rows deleted by cleanup meanwhile; InnoDB deadlocks on the server "
              f"during the storm: {storm}")
        assert report.failed == 0 and report.lost == 0, report.line()
        assert report.duplicates == 0 and report.worker_restarts == 0, report.line()
    finally:
        stop.set()
        harness.close(drop=True)


@pytest.mark.skipif(not BACKENDS["mariadb"], reason=NOT_RUN["mariadb"])
def test_mariadb_deadlock_is_retried_inside_gta() -> None:
    """The storm's deadlocks are rare and land anywhere: this one is certain. Two GTA
    transactions lock two rows in opposite orders; InnoDB kills one (1213), and
    `in_transaction` must run it again rather than let the error out."""
    url = BACKENDS["mariadb"]
    assert url
    db = open_database(url)
    table = new_table()
    db.execute_sql(f"CREATE TABLE {table} (id INT PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB")
    try:
        db.execute_sql(f"INSERT INTO {table} VALUES (1, 0), (2, 0)")
        both_locked = threading.Barrier(2, timeout=10)
        calls: list[str] = []
        errors: list[BaseException] = []

        def cross(first: int, second: int) -> None:
            def work() -> None:
                calls.append(f"{first}->{second}")
                db.execute_sql(f"UPDATE {table} SET v = v + 1 WHERE id = %s", (first,))
                if calls.count(f"{first}->{second}") == 1:
                    both_locked.wait()
                db.execute_sql(f"UPDATE {table} SET v = v + 1 WHERE id = %s", (second,))
            try:
                in_transaction(db, work)
            except BaseException as exc:
                errors.append(exc)
            finally:
                db.close()
        threads = [threading.Thread(target=cross, args=pair) for pair in ((1, 2), (2, 1))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors, f"a deadlock escaped in_transaction: {errors}"
        assert len(calls) == 3, f"expected one deadlock victim re-run, got calls {calls}"
        assert db.execute_sql(f"SELECT SUM(v) FROM {table}").fetchone()[0] == 4
    finally:
        db.execute_sql(f"DROP TABLE {table}")
        db.close()
