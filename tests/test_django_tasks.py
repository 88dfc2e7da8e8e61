"""The Django tasks backend (`gta_core.contrib.django.GTABackend`, through the django-tasks
backport): ``@task`` functions enqueue as GTA rows in the caller's ``atomic()``, run once
under a real ``gta-supervisor``, and ``get_result`` reads their state from the row."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from gta_core import runtime as runtime_module

from .handles import use_django_database
from .helpers import Env, wait_for

PLUGINS = "tests.tasks,gta_core.contrib.django"
SUPERVISOR_ENV = {"GTA_PLUGINS": PLUGINS, "DJANGO_SETTINGS_MODULE": "tests.django_app.settings"}


class Boom(Exception):
    """Raised to roll a transaction back."""


@pytest.fixture
def django_env(env: Env, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """The env, with Django's default database on it and GTA's Django plugin loaded here."""
    monkeypatch.setenv("GTA_PLUGINS", PLUGINS)
    env.runtime = runtime_module.configure()
    use_django_database("default", env.db_url)
    yield env


def test_enqueue_commits_with_the_view_and_runs_once(django_env: Env) -> None:
    from django.db import transaction
    from django_tasks import TaskResultStatus
    from django_tasks.exceptions import TaskResultDoesNotExist

    from .django_app.tasks import remember, remember_attempt
    with transaction.atomic():
        kept = remember.enqueue(n=1)
        with_context = remember_attempt.enqueue(2)
    with pytest.raises(Boom), transaction.atomic():
        lost = remember.enqueue(n=3)
        raise Boom
    with pytest.raises(TaskResultDoesNotExist):
        remember.get_result(lost.id)
    outside = remember.enqueue(n=4)  # outside atomic(): committed at once, as Django's own writes
    assert {remember.get_result(kept.id).status, remember.get_result(outside.id).status} == {TaskResultStatus.READY}

    django_env.supervisor(1, extra_env=SUPERVISOR_ENV)
    ids = [int(result.id) for result in (kept, with_context, outside)]
    assert django_env.wait_final(ids) == dict.fromkeys(ids, "succeeded")
    finished = remember.get_result(kept.id)
    assert finished.status == TaskResultStatus.SUCCESSFUL and finished.attempts == 1
    assert finished.kwargs == {"n": 1} and finished.finished_at is not None
    assert finished.return_value == 1 and remember.get_result(outside.id).return_value == 4  # GTA results
    assert remember_attempt.get_result(with_context.id).return_value is None
    runs = [entry for entry in django_env.ledger_entries() if entry["phase"].startswith("django")]
    assert sorted(entry["n"] for entry in runs) == [1, 2, 4]  # each once, the rolled-back one never
    assert [entry for entry in runs if entry["n"] == 2][0]["attempt"] == 1


def test_a_failing_task_reads_as_failed_with_its_error(django_env: Env) -> None:
    from django_tasks import TaskResultStatus

    from .django_app.tasks import Broken, breaks
    result = breaks.enqueue()
    django_env.supervisor(1, extra_env=SUPERVISOR_ENV)
    final = wait_for(lambda: (r := breaks.get_result(result.id)).status == TaskResultStatus.FAILED and r,
                     what="the failing task to be FAILED")
    assert final.attempts == 2  # MAX_ATTEMPTS in the backend's OPTIONS
    assert final.errors[-1].exception_class is Broken and "on purpose" in final.errors[-1].traceback
    with pytest.raises(ValueError, match="failed"):
        final.return_value  # noqa: B018


def test_an_invalid_task_is_refused_before_writing(django_env: Env) -> None:
    from django_tasks.exceptions import InvalidTaskError

    from .django_app.tasks import remember
    with pytest.raises(InvalidTaskError, match="Queue 'elsewhere' is not valid"):
        remember.using(queue_name="elsewhere").enqueue(n=1)
    assert django_env.store.counts() == {}
