"""``async def`` handlers on every configured database: they really run (their body, not just
the call that makes a coroutine), in workers and in eager mode.

Handlers live in tests/async_tasks.py (plugin ``tests.async_tasks``)."""
from __future__ import annotations

import asyncio

import pytest

import gta_core
from gta_core import runtime as runtime_module
from gta_core.testing import eager

from .helpers import Env, wait_log
from .test_supervisor import SERVING, entries, row, stop

PLUGINS = "tests.tasks,tests.async_tasks"


@pytest.fixture
def aenv(env: Env, monkeypatch: pytest.MonkeyPatch) -> Env:
    """`env` with the async handlers loaded here and in every supervisor started later."""
    monkeypatch.setenv("GTA_PLUGINS", PLUGINS)
    env.runtime.db.close()
    env.runtime = runtime_module.configure()
    return env


def test_async_handlers_bodies_run_in_a_worker(aenv: Env) -> None:
    env = aenv
    process = env.supervisor(1, wait_ready=False)
    wait_log(process, SERVING)
    ok = gta_core.submit(gta_core.OWN_TRANSACTION, "arecord", {"n": 7})
    flaky = gta_core.submit(gta_core.OWN_TRANSACTION, "aflaky", {"failures": 1})
    doomed = gta_core.submit(gta_core.OWN_TRANSACTION, "afail")
    assert env.wait_final([ok, flaky, doomed], 30) == {ok: "succeeded", flaky: "succeeded", doomed: "failed"}
    assert [entry["n"] for entry in entries(env, "run", ok)] == [7], "the coroutine's body did not run once"
    assert [entry["attempt"] for entry in entries(env, "run", flaky)] == [1, 2]
    assert row(env, flaky)["attempts"] == 2
    assert "async gave up on purpose" in row(env, doomed)["last_error"]
    assert stop(process) == 0


def test_eager_mode_runs_async_handlers(aenv: Env) -> None:
    env = aenv
    with eager() as run:
        gta_core.submit(gta_core.OWN_TRANSACTION, "arecord", {"n": 1})
        gta_core.submit(gta_core.OWN_TRANSACTION, "aparent", {"count": 2})
        gta_core.submit(gta_core.OWN_TRANSACTION, "afail")
        with pytest.raises(RuntimeError, match="async flaky failure"):  # a handler's own error reaches the test
            gta_core.submit(gta_core.OWN_TRANSACTION, "aflaky", {"failures": 1})
    assert run.outcomes("arecord") == ["succeeded"] * 3
    assert run.results[0].value == "ran 1"
    assert run.outcomes("aparent") == ["succeeded"]
    assert run.outcomes("afail") == ["failed"] and run.outcomes("aflaky") == ["failed"]
    assert sorted(entry["n"] for entry in entries(env, "run") if "n" in entry) == [0, 1, 1]


def test_eager_mode_runs_async_handlers_from_inside_a_running_loop(aenv: Env) -> None:
    env = aenv

    async def an_async_test() -> None:
        with eager() as run:
            gta_core.submit(gta_core.OWN_TRANSACTION, "arecord", {"n": 3})
        assert run.outcomes("arecord") == ["succeeded"]
    asyncio.run(an_async_test())
    assert [entry["n"] for entry in entries(env, "run")] == [3]
