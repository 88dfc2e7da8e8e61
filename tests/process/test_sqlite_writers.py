"""SQLite as a web app on the embedded default uses it: four processes (a web server's
workers) each run 300 transactions that read an application table and then submit a task,
while `gta-supervisor --workers 2` drains a backlog from the same file. Begun IMMEDIATE, as
docs/integrations.md says, no submit fails through peewee, SQLAlchemy or Django; begun
deferred (each framework's default), every submit that fails raises `gta_core.DatabaseLocked`
naming the fix for that framework (issue 35). The processes are `benchmarks/sqlite_writers.py`'s.
"""
from __future__ import annotations

import pytest

from benchmarks.sqlite_writers import FRAMEWORKS, create_app_table, run_writers
from gta_core import TaskRequest, submit_many

from ..support.handles import sqlite_path
from ..support.helpers import Env

PROCESSES, COUNT = 4, 300
#: tasks the supervisor's workers drain while each run's writers submit
BACKLOG = 3000
#: what the error of a failed deferred submit names as the fix, per framework
FIXES = {"peewee": "gta_core.transaction(db)", "sqlalchemy": '"begin" event', "django": "'transaction_mode'"}


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_four_writer_processes_beside_a_busy_supervisor(env: Env, framework: str) -> None:
    create_app_table(sqlite_path(env.db_url))
    env.supervisor(2)
    submit_many(env.runtime.db, [TaskRequest("record")] * BACKLOG)
    documented = run_writers(framework, "immediate", PROCESSES, COUNT, "record")
    print(f"\n{framework} IMMEDIATE: {documented.ok} submits in {documented.seconds:.2f} s, "
          f"{documented.rate:.0f} submits/s, {documented.failed} failed")
    assert documented.failures == {}
    assert documented.ok == PROCESSES * COUNT

    submit_many(env.runtime.db, [TaskRequest("record")] * BACKLOG)
    deferred = run_writers(framework, "deferred", PROCESSES, COUNT, "record")
    print(f"{framework} deferred: {deferred.ok} submits in {deferred.seconds:.2f} s, "
          f"{deferred.failed} failed: {deferred.failures.most_common(1)}")
    assert deferred.ok + deferred.failed == PROCESSES * COUNT
    assert deferred.failed > 0, "no deferred transaction failed: the workers were not busy enough to tell"
    for error in deferred.failures:
        assert error.startswith("gta_core.errors.DatabaseLocked: "), error
        assert FIXES[framework] in error and "IMMEDIATE" in error, error
    assert sum(env.store.counts().values()) == 2 * BACKLOG + documented.ok + deferred.ok  # nothing else written
