"""Workers SIGKILLed while the database ends every session: after the storm, nothing stays stuck.

Found in use (issue 14): two supervisors drained short tasks on PostgreSQL while a worker
that ran a task was SIGKILLed every second and every session of the database was ended
from the server every few seconds. Both supervisors stayed up, yet minutes after the faults
stopped ~50 rows were still ``running`` with their leases long expired: the janitor thread,
which both gives a dead worker's leases back and rescues expired ones, was retrying a read
on a connection the server had ended (peewee kept handing the dead connection out), so no
lease was rescued any more.

The scenario runs on the shared servers and ends only the sessions of its own database
(PostgreSQL ``pg_terminate_backend``, MariaDB ``KILL``); on SQLite, which has no sessions to
end, the worker kills alone. The invariant (`ChaosHarness.check`): once the faults stop no
row outlives its lease by more than the rescue grace, every task ends succeeded, and each
ran at least once (duplicates only where the fault log explains them).
"""
from __future__ import annotations

import time

import pytest

from gta_core.db.connect import open_database

from .harness import ChaosHarness
from .servers import end_sessions

pytestmark = pytest.mark.chaos

LEASE = 3.0
TASKS = 3000
STORM = 15.0
#: per database: the sessions of the current database other than the killer's own, and how to end one
SESSIONS = {
    "postgres": ("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
                 "SELECT pg_terminate_backend({})"),
    "mariadb": ("SELECT id FROM information_schema.processlist WHERE db = DATABASE() AND id <> CONNECTION_ID()",
                "KILL {}"),
}


def end_other_sessions(db_url: str, backend: str) -> int:
    """End every other session of this test's database (never another database's) from the server."""
    db = open_database(db_url, statement_timeout=10)
    try:
        return end_sessions(db, *SESSIONS[backend])
    finally:
        db.close()


@pytest.mark.chaos(lease_timeout=LEASE, workers=2, threads=1)
def test_workers_killed_while_the_server_ends_every_session(chaos: ChaosHarness, backend: str) -> None:
    """Each second a worker that ran a task is SIGKILLed; every third second the server first
    ends every session, then a worker of each supervisor is killed at once, so that each
    supervisor has a dead worker to settle while its own connections are dead."""
    ids = chaos.submit("chaos_work", [{"seconds": 0.02}] * TASKS)
    chaos.supervisor()
    chaos.supervisor()
    ended = kills = 0
    started = time.monotonic()
    next_end = started + 1.0
    while time.monotonic() - started < STORM:
        time.sleep(1.0)
        ran = {execution.pid for execution in chaos.executions()}
        victims = [[pid for pid in process.worker_pids() if pid in ran] for process in chaos.live_supervisors()]
        if backend != "sqlite" and time.monotonic() >= next_end:
            next_end += 3.0
            chaos.faults.record("db-end-sessions")
            ended += end_other_sessions(chaos.db_url, backend)
        else:  # one worker of one supervisor
            victims = [pids for pids in victims[kills % max(1, len(victims)):] if pids][:1]
        for pids in victims:
            if pids:
                chaos.kill(pids[kills % len(pids)])
                kills += 1
    assert kills >= STORM / 2, f"only {kills} workers were killed: the scenario did not bite"
    if backend != "sqlite":
        assert ended >= 8, f"only {ended} sessions were ended: the scenario did not bite"
    report = chaos.check("kill-storm", ids, within=60)
    assert report.succeeded == len(ids) and report.lost == 0, report.line()
    for process in chaos.env.processes:  # each dead worker was settled at once, none left to the rescuer
        gave_up = [line for line in process.log().splitlines() if "could not release leases" in line]
        assert not gave_up, "\n".join(gave_up[:5])
