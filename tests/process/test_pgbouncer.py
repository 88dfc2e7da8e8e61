"""GTA through PgBouncer in transaction pooling mode, started by the test in front of PostgreSQL.

Each transaction may get a different server session: prepared statements and ``LISTEN`` do not
survive from one to the next. Submit, lease, complete, rescue and cancel must all work; wake-ups
come through a direct ``--listen-url`` connection, or not at all (idle workers poll).
The pgbouncer binary is required (Debian package ``pgbouncer``): missing, these tests fail.
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

import gta_core
from gta_core.db.connect import open_database

from ..chaos.harness import client_ports
from ..support.backends import BACKENDS
from ..support.helpers import Env, SupervisorProcess, wait_for
from ..support.rows import age, make
from ..support.servers import PgBouncer

DIRECT = BACKENDS["postgres"]
pytestmark = pytest.mark.skipif(not DIRECT, reason="PgBouncer runs in front of PostgreSQL: set GTA_TEST_POSTGRES_URL")


@pytest.fixture
def pgbouncer(tmp_path: Path) -> Iterator[PgBouncer]:
    assert DIRECT
    server = PgBouncer(tmp_path, DIRECT, pool_size=3)  # few server sessions: clients share them all the time
    yield server
    server.stop()


@pytest.fixture
def backend() -> str:
    return "postgres"


@pytest.fixture
def db_url(pgbouncer: PgBouncer) -> str:
    """The `env` fixture's table is made, and every process of the test talks, through pgbouncer."""
    return pgbouncer.url


def statuses(env: Env, ids: list[int]) -> dict[int, str]:
    return env.store.statuses(ids)


def all_final(env: Env, ids: list[int]) -> dict[int, str] | None:
    found = statuses(env, ids)
    return found if all(status in ("succeeded", "failed", "cancelled") for status in found.values()) else None


def clean_log(process: SupervisorProcess) -> str:
    """The supervisor's log, which may say once per process that statements run unprepared, but
    shows no failed lease, completion or rescue."""
    log = process.log()
    assert "Traceback" not in log and " ERROR " not in log, log
    assert not re.search(r"WARNING .*(lease|heartbeat|check|rescue|complet\w*|release\w*) failed", log), log
    return log


def other_host_url(url: str) -> str:
    """The same pgbouncer as ``localhost``: a submit through it is not the supervisor's local
    wake-up (that is keyed by host and port), so only NOTIFY can wake it at once."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.replace("127.0.0.1", "localhost")))


def test_submit_lease_complete_rescue_and_cancel_through_pgbouncer(env: Env, pgbouncer: PgBouncer) -> None:
    rescued = make(env, "running")  # leased by a worker that is gone: rescued, then run again
    age(env, [rescued], "lease_expires_at", 60)
    many = gta_core.submit_many(gta_core.OWN_TRANSACTION, [gta_core.TaskRequest("record", {"n": n}) for n in range(40)])
    single = [gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 100 + n}) for n in range(5)]
    with env.runtime.db.atomic():  # a caller's transaction through the pooler
        single.append(gta_core.submit(env.runtime.db, "flaky", {"failures": 1}))
    later = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 999}, delay=3600)
    assert gta_core.cancel(later) == {later: gta_core.CancelResult(True, "pending")}
    assert statuses(env, [later])[later] == "cancelled"

    supervisor = env.supervisor(2, "--threads", "2", "--listen-url", DIRECT, "--lease-timeout", "3")
    ids = [rescued, *many, *single]
    final = wait_for(lambda: all_final(env, ids), what="every task final through pgbouncer")
    assert set(final.values()) == {"succeeded"}, final
    assert env.store.get(rescued)["attempts"] == 2  # type: ignore[index]
    assert env.store.get(single[-1])["attempts"] == 2  # type: ignore[index]  # retried once
    assert statuses(env, [later]) == {later: "cancelled"}
    runs = env.runs_by_task()
    assert runs.pop(single[-1]) == 2 and runs == {task_id: 1 for task_id in ids[:-1]}  # nothing ran twice

    # a running task is cancelled through the pooler too
    sleeper = gta_core.submit(gta_core.OWN_TRANSACTION, "sleepy", {"seconds": 30})
    wait_for(lambda: statuses(env, [sleeper])[sleeper] == "running", what="the sleeper to start")
    gta_core.cancel(sleeper)
    assert statuses(env, [sleeper]) == {sleeper: "cancelled"}
    clean_log(supervisor)


def test_a_listen_url_wakes_workers_at_once_through_pgbouncer(env: Env, pgbouncer: PgBouncer) -> None:
    """Workers poll every 5 minutes here: only the NOTIFY of the submit, received on the direct
    listen connection, can start the task within the minute."""
    supervisor = env.supervisor(1, "--listen-url", DIRECT, "--scan-interval", "300s",
                                "--instant-scan-interval", "300s")
    time.sleep(2)  # the workers' first (empty) poll is done
    handle = open_database(other_host_url(env.db_url))
    try:
        task_id = gta_core.submit(handle, "record", {"n": 1})
    finally:
        handle.close()
    wait_for(lambda: statuses(env, [task_id])[task_id] == "succeeded", timeout=60, what="a wake-up by NOTIFY")
    # and the listening session is the supervisor's own, not a pooled one others share
    listening = env.runtime.db.execute_sql(
        "SELECT client_port FROM pg_stat_activity WHERE datname = current_database() AND query = %s",
        (f'LISTEN "gta_{env.table}"',)).fetchall()
    ours = client_ports([supervisor.pid], urlsplit(DIRECT).port or 5432)
    assert [port for (port,) in listening] and {port for (port,) in listening} <= ours
    clean_log(supervisor)


@pytest.mark.parametrize("listen", [None, "off"], ids=["default", "off"])
def test_without_a_listen_url_a_supervisor_behind_pgbouncer_polls(env: Env, pgbouncer: PgBouncer,
                                                                   listen: str | None) -> None:
    """LISTEN through a transaction pooler hears nothing reliably: tasks still run within a scan
    interval, and the supervisor neither fails nor spins on its listener."""
    args = ("--listen-url", listen) if listen else ()
    supervisor = env.supervisor(1, *args, "--scan-interval", "1s")
    handle = open_database(other_host_url(env.db_url))
    try:
        ids = [gta_core.submit(handle, "record", {"n": n}) for n in range(5)]
    finally:
        handle.close()
    wait_for(lambda: all_final(env, ids), what="tasks run by polling")
    assert set(statuses(env, ids).values()) == {"succeeded"}
    before = cpu_seconds(supervisor.pid)
    time.sleep(5)
    assert cpu_seconds(supervisor.pid) - before < 2.5, "the idle supervisor spins"
    log = clean_log(supervisor)
    assert log.count("LISTEN connection failed") <= 1, log


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime in clock ticks


def test_a_callers_own_transactions_through_pgbouncer_never_fail(env: Env, pgbouncer: PgBouncer) -> None:
    """The submit that finds the pooled session without GTA's prepared statement is the first
    statement of the caller's transaction: GTA begins that transaction again, unprepared,
    instead of failing it."""
    supervisor = env.supervisor(2, "--listen-url", DIRECT)  # other clients keep the pool's sessions moving
    db = env.runtime.db
    ids = []
    for n in range(150):
        with db.atomic():
            ids.append(gta_core.submit(db, "record", {"n": n}))
        time.sleep(0.02)  # the woken workers take the pool's sessions meanwhile
    wait_for(lambda: all_final(env, ids), what="every task final")
    assert set(statuses(env, ids).values()) == {"succeeded"}
    clean_log(supervisor)
