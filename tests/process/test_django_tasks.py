"""The Django tasks backend (`gta_core.contrib.django.GTABackend`; ``django.tasks`` on Django 6,
the django-tasks backport on Django 5.2): ``@task`` functions enqueue as GTA rows in the
caller's ``atomic()``, run once under a real ``gta-supervisor``, and ``get_result`` reads their
state from the row. Django's own ``tests/tasks`` suite runs against the backend in
`tests.process.test_django6`."""
from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest

import gta_core
from gta_core.contrib.django import GTABackend

from ..support.backends import only_on
from ..support.handles import use_django_database
from ..support.helpers import Env, wait_for

PLUGINS = "tests.handlers.tasks,gta_core.contrib.django"
SUPERVISOR_ENV = {"GTA_PLUGINS": PLUGINS, "DJANGO_SETTINGS_MODULE": "tests.handlers.django_app.settings"}


class Boom(Exception):
    """Raised to roll a transaction back."""


@pytest.fixture
def django_env(env: Env, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """The env, with Django's default database (and the alias "second") on it and GTA's Django
    plugin loaded here."""
    env.with_plugins(monkeypatch, PLUGINS)
    use_django_database("default", env.db_url)
    use_django_database("second", env.db_url)
    yield env


def task_id(result: Any) -> int:
    """The GTA task id of a Django result id (``42.<secret>``)."""
    return int(result.id.split(".")[0])


def final(backend_result: Any) -> Any:
    """``backend_result`` refreshed until the worker has finished it."""
    wait_for(lambda: backend_result.refresh() or backend_result.is_finished, what=f"task {backend_result.id} to end")
    return backend_result


def signals(env: Env) -> list[dict[str, Any]]:
    return [entry for entry in env.ledger_entries() if entry["phase"] == "django-signal"]


def test_enqueue_commits_with_the_view_and_runs_once(django_env: Env) -> None:
    from django.db import transaction

    from ..handlers.django_app.api import TaskResultDoesNotExist, TaskResultStatus
    from ..handlers.django_app.tasks import remember, remember_async, remember_attempt
    with transaction.atomic():
        kept = remember.enqueue(n=1)
        with_context = remember_attempt.enqueue(2)
    with pytest.raises(Boom), transaction.atomic():
        lost = remember.enqueue(n=3)
        raise Boom
    with pytest.raises(TaskResultDoesNotExist):
        remember.get_result(lost.id)
    outside = remember.enqueue(n=4)  # outside atomic(): committed at once, as Django's own writes
    coroutine = remember_async.enqueue(5)  # async tasks are defined, enqueued and run
    assert remember.get_result(kept.id) == kept and remember.get_result(outside.id) == outside  # as enqueued
    assert django_env.store.get(task_id(kept))["key"] == "django:tests.handlers.django_app.tasks.remember"

    django_env.supervisor(1, extra_env=SUPERVISOR_ENV)
    ids = [task_id(result) for result in (kept, with_context, outside, coroutine)]
    assert django_env.wait_final(ids) == dict.fromkeys(ids, "succeeded")
    finished = remember.get_result(kept.id)
    assert finished.status == TaskResultStatus.SUCCESSFUL and finished.attempts == 1
    assert finished.kwargs == {"n": 1} and finished.finished_at is not None
    assert finished.started_at >= finished.enqueued_at == kept.enqueued_at
    assert finished.return_value == 1 and remember.get_result(outside.id).return_value == 4  # GTA results
    assert remember_attempt.get_result(with_context.id).return_value is None
    assert remember_async.get_result(coroutine.id).return_value == 5
    runs = [entry for entry in django_env.ledger_entries() if entry["phase"] in ("django", "django-context")]
    assert sorted(entry["n"] for entry in runs) == [1, 2, 4]  # each once, the rolled-back one never
    (context_run,) = [entry for entry in runs if entry["phase"] == "django-context"]
    assert (context_run["attempt"], context_run["id"]) == (1, with_context.id)  # the context's result is the task's


def test_the_worker_sends_task_started_and_task_finished(django_env: Env) -> None:
    """Django's lifecycle signals fire in the worker, once per attempt, with the attempt's state
    and errors: what Django's log lines, error reporting and metrics hook into."""
    from ..handlers.django_app.api import TaskResultStatus
    from ..handlers.django_app.tasks import Broken, breaks, remember, returns_no_json
    succeeds, fails, no_json = remember.enqueue(n=1), breaks.enqueue(), returns_no_json.enqueue()
    supervisor = django_env.supervisor(1, extra_env=SUPERVISOR_ENV)
    failed = final(breaks.get_result(fails.id))
    assert failed.status == TaskResultStatus.FAILED and failed.attempts == 2  # MAX_ATTEMPTS in OPTIONS
    assert failed.errors[-1].exception_class is Broken and "on purpose" in failed.errors[-1].traceback
    with pytest.raises(ValueError, match="failed"):
        failed.return_value  # noqa: B018
    not_json = final(returns_no_json.get_result(no_json.id))  # a return value that is not JSON: TypeError
    assert not_json.status == TaskResultStatus.FAILED and not_json.errors[-1].exception_class is TypeError
    assert final(remember.get_result(succeeds.id)).return_value == 1

    sent = signals(django_env)
    assert {entry["pid"] for entry in sent} <= set(supervisor.worker_pids()) and os.getpid() not in {
        entry["pid"] for entry in sent}
    by_task = {result.id: [(entry["signal"], entry["status"]) for entry in sent if entry["id"] == result.id]
               for result in (succeeds, fails)}
    assert by_task[succeeds.id] == [("started", "RUNNING"), ("finished", "SUCCESSFUL")]
    # a failed attempt that GTA retries is announced READY (it will run again), the last FAILED
    assert by_task[fails.id] == [("started", "RUNNING"), ("finished", "READY"), ("started", "RUNNING"),
                                 ("finished", "FAILED")]
    finished_failures = [entry for entry in sent if entry["id"] == fails.id and entry["signal"] == "finished"]
    assert [entry["errors"][-1] for entry in finished_failures] == ["tests.handlers.django_app.tasks.Broken"] * 2


@pytest.mark.skipif(not hasattr(gta_core, "attempts"), reason="needs the attempt log, gta_core.attempts (issue 30)")
def test_one_task_error_per_failed_attempt_with_its_class_path(django_env: Env) -> None:
    from ..handlers.django_app.tasks import fails_differently
    result = fails_differently.enqueue()
    django_env.supervisor(1, extra_env=SUPERVISOR_ENV)
    failed = final(fails_differently.get_result(result.id))
    assert [error.exception_class_path for error in failed.errors] == [
        "tests.handlers.django_app.tasks.Broken", "builtins.ExceptionGroup"]
    assert "line two" in failed.errors[0].traceback and "a note" in failed.errors[0].traceback
    assert len(failed.worker_ids) == 2 and failed.started_at < failed.last_attempted_at


def test_get_result_sees_the_open_transaction_and_returns_the_task_as_enqueued(django_env: Env) -> None:
    from django.db import transaction
    from django.utils import timezone

    from ..handlers.django_app.api import TaskResultDoesNotExist, task_backends
    from ..handlers.django_app.tasks import remember
    later = timezone.now() + dt.timedelta(hours=1)
    task = remember.using(priority=7, queue_name="mail", run_after=later, backend="second")
    with transaction.atomic(using="second"):
        result = task.enqueue(n=5)
        assert task_backends["second"].get_result(result.id) == result  # read through the enqueuing connection
        with pytest.raises(TaskResultDoesNotExist):  # not committed: another connection cannot see it
            task_backends["default"].get_result(result.id)
        result.refresh()  # the result's own backend: "second"
    fetched = remember.get_result(result.id)
    assert fetched == result and fetched.task == task and fetched.task.get_backend() is task_backends["second"]
    row = django_env.store.get(task_id(result))
    assert (row["queue"], row["priority"], row["run_at"]) == ("mail", 7, later)


def test_result_ids_are_unguessable_and_odd_ones_do_not_exist(django_env: Env) -> None:
    from ..handlers.django_app.api import TaskResultDoesNotExist, task_backends
    from ..handlers.django_app.tasks import remember
    result = remember.enqueue(n=1)
    other = remember.enqueue(n=2)
    number, secret = result.id.split(".")
    assert len(result.id) <= 64 and len(secret) == 16
    plain = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1})  # a GTA task that is not Django's
    backend = task_backends["default"]
    for odd in [number, f"{number}.{other.id.split('.')[1]}", f"{plain}.{secret}", "\u0663." + secret,
                f"{'9' * 20}.{secret}", f"0{result.id}", f"{result.id}x", " " + result.id, "", "x" * 65]:
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(odd)
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result(int(number))
    assert backend.get_result(result.id) == result


def test_bad_input_is_refused_before_writing(django_env: Env) -> None:
    from ..handlers.django_app.api import InvalidTask
    from ..handlers.django_app.tasks import remember
    with pytest.raises(InvalidTask, match="Queue 'elsewhere' is not valid"):
        remember.using(queue_name="elsewhere").enqueue(n=1)
    with pytest.raises(TypeError, match="Unsupported type"):  # as Django documents, not GTA's InvalidArguments
        remember.enqueue(n=dt.datetime.now())
    assert django_env.store.counts() == {}
    assert [error.id for error in GTABackend("typo", {"OPTIONS": {"DATABASE": "nope"}}).check()] == ["gta.E001"]


def test_rows_stored_under_the_old_key_still_run(django_env: Env) -> None:
    """Rolling upgrade: a row an earlier release stored under ``django.task`` (its path in the
    args) runs on this release's workers."""
    row = gta_core.submit(gta_core.OWN_TRANSACTION, "django.task", {
        "path": "tests.handlers.django_app.tasks.remember", "args": [], "kwargs": {"n": 7}, "backend": "default"})
    django_env.supervisor(1, extra_env=SUPERVISOR_ENV)
    assert django_env.wait_final([row]) == {row: "succeeded"}
    assert gta_core.result(row).value == 7  # type: ignore[union-attr]


@pytest.mark.parametrize("backend", [only_on("postgres")])
@pytest.mark.parametrize("persistent", [False, True], ids=["default-settings", "persistent-connections"])
def test_a_worker_recovers_after_the_server_ends_its_sessions(django_env: Env, persistent: bool) -> None:
    """``pg_terminate_backend`` of every session of the workers: the ORM tasks after it run at
    their first attempt (Django's default closes the connection after each task; persistent
    connections with health checks are checked before the next task uses them)."""
    from ..handlers.django_app.api import TaskResultStatus
    from ..handlers.django_app.tasks import queries
    name = f"gta-test-{os.getpid()}-{threading.get_ident()}"
    extra = {**SUPERVISOR_ENV, "PGAPPNAME": name, **({"GTA_TEST_PERSISTENT_CONNECTIONS": "1"} if persistent else {})}
    django_env.supervisor(1, "--threads", "1", extra_env=extra)
    assert final(queries.enqueue()).status == TaskResultStatus.SUCCESSFUL
    killer = psycopg2.connect(django_env.db_url)
    killer.autocommit = True
    with killer.cursor() as cursor:
        cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
                       (name,))
        assert cursor.fetchone()[0] >= 1
    killer.close()
    after = [final(queries.enqueue()) for _ in range(3)]
    assert [(result.status, result.attempts) for result in after] == [(TaskResultStatus.SUCCESSFUL, 1)] * 3


@pytest.mark.parametrize("backend", ["sqlite"])
def test_400_concurrent_enqueues_on_sqlite_while_workers_are_busy(django_env: Env) -> None:
    """Django's default SQLite settings (deferred transactions, 5 s timeout): no ``enqueue()``
    fails with "database is locked" while the workers commit leases and outcomes."""
    from django.db import connections

    from ..handlers.django_app.tasks import remember
    connections.settings["default"] = {**connections.settings["default"], "OPTIONS": {}}  # Django's defaults
    connections["default"].close()
    gta_core.submit_many(gta_core.OWN_TRANSACTION, [("record", {"n": n}) for n in range(3000)])
    django_env.supervisor(2, "--threads", "4", extra_env=SUPERVISOR_ENV)
    wait_for(lambda: len(django_env.ledger_entries()) >= 50, what="the workers to be draining")
    errors: list[BaseException] = []

    def enqueue(first: int) -> None:
        try:
            for n in range(first, first + 25):
                try:
                    remember.enqueue(n=n)
                except Exception as exc:  # counted, not raised: every failure is the finding
                    errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=enqueue, args=(first,)) for first in range(0, 400, 25)]
    began = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ended = time.time()
    assert not errors, f"{len(errors)} of 400 enqueue() failed, first: {errors[0]!r}"
    meanwhile = [entry for entry in django_env.ledger_entries()
                 if entry["phase"] == "run" and began <= entry["t"] <= ended]
    assert len(meanwhile) >= 20  # the workers were committing meanwhile
    rows = django_env.store.counts()
    assert sum(rows.values()) == 3400
