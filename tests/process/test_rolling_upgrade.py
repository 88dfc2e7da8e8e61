"""A rolling upgrade: a supervisor and an application of the previous schema version keep
working on one table while this version's `gta migrate` upgrades it and this version's
supervisor joins them; nothing is lost, nothing fails because of the mismatch.

The previous version is this repository's own code at the last commit of schema version 1,
taken with ``git archive`` into a temporary directory and run as separate processes with
their own ``PYTHONPATH`` (a clone has the whole history; a shallow one must be unshallowed).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import gta_core
from gta_core.store.sql.statements import SCHEMA_VERSION

from ..support.cli import ok
from ..support.helpers import Env, SupervisorProcess, wait_for
from ..support.paths import REPO

#: the parent of cbda759 ("Schema version 2: ... indexed only where set"): schema version 1
PREVIOUS = "1ed98de18526f0c17a991d3c04983aa561cd254d"
PREVIOUS_VERSION = 1

SUBMITTER = textwrap.dedent("""
    import json, sys, time
    import gta_core
    ids = []
    for n in range(int(sys.argv[1])):
        first = gta_core.submit(None, "record", {"n": n}, dedupe_key=f"previous-{n}")
        again = gta_core.submit(None, "record", {"n": n}, dedupe_key=f"previous-{n}")
        assert again == first, (n, first, again)
        ids.append(first)
        time.sleep(float(sys.argv[2]))
    print(json.dumps(ids))
""")


#: the last commit before the attempt log (`<table>_attempts`, added at schema version 2)
BEFORE_ATTEMPT_LOG = "7c138e3cf3111b9f29d1951434ac0f9675f8e16e"


def release_at(commit: str, root: Path) -> Path:
    """This repository's code at ``commit``, extracted into ``root`` with ``git archive``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit, "gta_core",
                              "gta_plugins", "tests/__init__.py", "tests/tasks.py"], capture_output=True)
    assert archive.returncode == 0, (f"the rolling-upgrade test needs commit {commit} of this repository "
                                     f"(a shallow clone: git fetch --unshallow): {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    return root


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return release_at(PREVIOUS, tmp_path_factory.mktemp("previous-release"))


@pytest.fixture(scope="module")
def release_before_attempt_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return release_at(BEFORE_ATTEMPT_LOG, tmp_path_factory.mktemp("release-before-attempt-log"))


def previous_environ(root: Path) -> dict[str, str]:
    """This process's environment for the previous release at ``root``: its code first on the
    path, and the built-in plugins it lacks disabled. Their entry points are this version's
    install's, which a host of the previous release would not have: loaded, they import this
    version's modules beside its own (the ``otel`` plugin failed so)."""
    missing = [point.name for point in entry_points(group="gta_handlers")
               if point.value.startswith("gta_plugins.")
               and not (root / "gta_plugins" / f"{point.value.split(':')[0].split('.')[1]}.py").exists()]
    disabled = ",".join(filter(None, [os.environ.get("GTA_DISABLE_PLUGINS", ""), *missing]))
    # the handlers as that release's tree has them (tests/tasks.py, taken by release_at), not this
    # version's tests.handlers.tasks
    return {**os.environ, "PYTHONPATH": str(root), "GTA_DISABLE_PLUGINS": disabled, "GTA_PLUGINS": "tests.tasks"}


def previous(root: Path, script: str, *args: str) -> subprocess.Popen[str]:
    """``python -c script`` with the previous release's code first on the path (and as the
    working directory, which ``-c`` puts before it)."""
    return subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=previous_environ(root), cwd=root)


def previous_supervisor(env: Env, root: Path) -> SupervisorProcess:
    """The previous release's ``gta-supervisor`` (run from its directory: ``-m`` puts the
    working directory first on the path)."""
    log_path = env.tmp_path / "previous-supervisor.log"
    with open(log_path, "wb") as log_file:
        popen = subprocess.Popen([sys.executable, "-m", "gta_core.cli_supervisor", "--workers", "1"], cwd=root,
                                 stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                                 env=previous_environ(root))
    process = SupervisorProcess(popen, log_path)
    env.processes.append(process)  # stopped with the others at the end
    process.wait_workers(1)
    return process


def clean(process: SupervisorProcess) -> None:
    log = process.log()
    assert "Traceback" not in log and " ERROR " not in log, log


def test_previous_and_new_supervisors_share_a_table_across_migrate(env: Env, previous_release: Path) -> None:
    env.store.drop()  # the fixture's table is this version's: start from the previous version's own
    made = previous(previous_release, "import sys; from gta_core.cli import main; sys.exit(main(['migrate']))")
    assert made.communicate(timeout=60) and made.returncode == 0
    assert env.store.schema_version() == PREVIOUS_VERSION

    old = previous_supervisor(env, previous_release)
    submitter = previous(previous_release, SUBMITTER, "60", "0.1")  # an application not yet upgraded
    time.sleep(1.5)
    out = ok("migrate")  # while both run
    assert f"from schema version {PREVIOUS_VERSION} to {SCHEMA_VERSION}" in out, out
    new = env.supervisor(1)
    ours = [gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1000 + n}, dedupe_key=f"new-{n}")
            for n in range(20)]
    assert gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1000}, dedupe_key="new-0") == ours[0]

    stdout, stderr = submitter.communicate(timeout=120)
    assert submitter.returncode == 0, stderr  # the previous version's dedupe submits still work
    theirs = json.loads(stdout)
    ids = theirs + ours
    assert len(set(ids)) == 80

    old.signal(signal.SIGTERM)  # the last step of the rollout
    assert old.wait() == 0
    statuses = wait_for(lambda: found if set((found := env.store.statuses(ids)).values()) <= {"succeeded"}
                        and len(found) == 80 else None, what="every task of both versions succeeded")
    assert set(statuses.values()) == {"succeeded"}
    assert env.runs_by_task() == {task_id: 1 for task_id in ids}  # each ran once, by one version or the other
    count = env.runtime.db.execute_sql(f"SELECT COUNT(*) FROM {env.table}").fetchone()[0]
    assert count == 80
    clean(old)
    clean(new)


def test_the_release_before_the_attempt_log_shares_a_table_across_migrate(
        env: Env, release_before_attempt_log: Path) -> None:
    env.store.drop()
    made = previous(release_before_attempt_log,
                    "import sys; from gta_core.cli import main; sys.exit(main(['migrate']))")
    assert made.communicate(timeout=60) and made.returncode == 0
    assert not env.store.db.table_exists(f"{env.table}_attempts")

    old = previous_supervisor(env, release_before_attempt_log)
    before = [gta_core.submit(gta_core.OWN_TRANSACTION, "flaky", {"failures": 1}) for _ in range(10)]
    ok("migrate")  # while it runs: adds the log table
    new = env.supervisor(1)
    old.signal(signal.SIGTERM)  # the last step of the rollout
    assert old.wait() == 0
    after = [gta_core.submit(gta_core.OWN_TRANSACTION, "flaky", {"failures": 1}) for _ in range(10)]
    assert set(env.wait_final(before + after, 60).values()) == {"succeeded"}
    assert env.runs_by_task() == {task_id: 2 for task_id in before + after}  # a failure, then the success

    for task_id in before:  # whichever version ran its failed attempt, the history ends in its success
        history = gta_core.attempts(task_id)
        assert history and history[-1].outcome == "succeeded" and history[-1].number == 2
    for task_id in after:  # run by this version alone: every attempt is there
        history = gta_core.attempts(task_id)
        assert history and [(entry.number, entry.outcome) for entry in history] == [(1, "retried"), (2, "succeeded")]
        assert history[0].exception_class_path == "builtins.RuntimeError"
    clean(old)
    clean(new)
