"""Plugins around a submit, in process, on every configured database: a context plugin that
raises, and submit scopes that see the rows and their ids (the plugin manager itself is
tests/unit/test_plugins.py)."""
from __future__ import annotations

import json
import logging

import pytest

import gta_core
from gta_core import runtime as runtime_module

from ..support.helpers import Env


def test_submit_survives_a_faulty_context_plugin(env: Env, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("GTA_PLUGINS",
                       "tests.handlers.tasks,tests.handlers.plugins_bad.faulty,tests.handlers.plugins_bad.tenant_context")
    runtime = runtime_module.configure()
    with caplog.at_level(logging.ERROR, logger="gta.plugins"):
        task_id = gta_core.submit(runtime.db, "record", {"n": 7}, context={"request": "r-1"})
    row = env.store.get(task_id)
    assert row is not None
    assert json.loads(row["context"]) == {"tenant": "acme", "request": "r-1"}
    assert runtime.plugins.hook_errors == 1
    assert any("capture_context exploded" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_submit_scopes_see_the_rows_and_their_ids_and_survive_a_faulty_one(
        env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from ..handlers import scope_probe
    monkeypatch.setenv("GTA_PLUGINS",
                       "tests.handlers.tasks,tests.handlers.plugins_bad.faulty_scope,tests.handlers.scope_probe")
    runtime = runtime_module.configure()
    scope_probe.seen.clear()
    with caplog.at_level(logging.ERROR, logger="gta.plugins"):
        first = gta_core.submit_many(runtime.db, [("record", {"n": 1}), ("greet", {"name": "a"})])
        second = gta_core.submit(runtime.db, "greet", {"name": "b"}, context={"request": "r-2"})
    assert [json.loads(env.store.get(task_id)["context"]) for task_id in [*first, second]] == [
        {"probe": "task 0"}, {"probe": "task 1"}, {"probe": "task 0", "request": "r-2"}]
    assert scope_probe.seen == [(first, None), ([second], None)]
    # entering the first scope and exiting the second raised: logged, counted, the submits went on
    assert runtime.plugins.hook_errors == 2
    assert [str(r.exc_info[1]) for r in caplog.records if r.exc_info] == [
        "faulty plugin: scope exploded entering", "faulty plugin: scope exploded exiting"]
    # a write that fails raises through every scope, which sees it; none can swallow it (the
    # faulty one tries)
    monkeypatch.setenv("GTA_TABLE", "gta_no_such_table")
    runtime = runtime_module.configure()
    with pytest.raises(gta_core.SchemaError):
        gta_core.submit(runtime.db, "greet", {"name": "c"})
    ids, error = scope_probe.seen[-1]
    assert ids is None and isinstance(error, gta_core.SchemaError)
