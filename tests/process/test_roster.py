"""A worker leases only the task keys it has handlers for, and the roster of live supervisors
says which due tasks none of them handles (a rolling deploy, a host's plugins mis-set): those
wait, unharmed, until a supervisor with the handler is up, and the monitor, the metrics, ``gta
stats`` and the dashboard say so with the count waiting. ``gta demo`` on a shared database
takes no task of another application's."""
from __future__ import annotations

import json
import logging

import pytest

import gta_core
from gta_core.config import load_settings
from gta_core.metrics.database_gauges import read_stats
from gta_core.store.inserts import NewTask
from gta_core.store.roster import SupervisorState, supervisors, unhandled_now
from gta_plugins import monitor

from ..support.cli import gta, ok
from ..support.helpers import Env, wait_for
from ..support.supervisors import start, stop


def pending_unknown(env: Env, key: str = "send_email", queue: str = "default") -> int:
    """A pending task whose key no process here has a handler for (another application's)."""
    (task_id,) = env.store.insert([NewTask(key, queue, 0, "{}", None, 3)])
    return int(task_id)


def untouched(env: Env, task_id: int) -> bool:
    task = env.store.get(task_id)
    return task is not None and (task["status"], task["attempts"], task["last_error"]) == ("pending", 0, None)


@pytest.mark.parametrize("limited", [False, True], ids=["plain", "under-a-limit"])
def test_a_lease_takes_only_the_keys_given(env: Env, limited: bool) -> None:
    others = [pending_unknown(env) for _ in range(3)]
    ours = gta_core.submit_many(gta_core.OWN_TRANSACTION, [("record", {"n": n}) for n in range(3)])
    if limited:  # the limited lease (its limited part and its unlimited part) filters alike
        gta_core.limit_queue("default", concurrency=2)
        gta_core.submit(gta_core.OWN_TRANSACTION, "greet", {"name": "x"}, queue="elsewhere")
    leased = env.store.lease("w", ["default", "elsewhere"], 10, 30.0, keys=("greet", "record"))
    assert sorted(task.id for task in leased if task.key == "record") == (ours[:2] if limited else ours)
    assert all(untouched(env, task_id) for task_id in others)
    assert env.store.lease("w", ["default"], 10, 30.0, keys=()) == []


@pytest.mark.parametrize("limited", [False, True], ids=["plain", "under-a-limit"])
def test_a_family_of_keys_leases_every_key_it_begins_and_no_other(env: Env, limited: bool) -> None:
    """A handler of ``django:*`` (the Django backend's family) runs ``django:<path>`` tasks: the
    lease takes them, and only them, by prefix; the roster counts them handled."""
    ours = [pending_unknown(env, key) for key in ("django:shop.tasks.mail", "django:a")]
    others = [pending_unknown(env, key) for key in ("djangox:a", "Django:a", "django", "send_email")]
    if limited:
        gta_core.limit_queue("default", concurrency=5)
    leased = env.store.lease("w", ["default"], 10, 30.0, keys=("django:*", "record"))
    assert sorted(task.id for task in leased) == ours
    assert all(untouched(env, task_id) for task_id in others)

    supervisor = SupervisorState("h:1:t", "h", 1, ("default",), {"django:*": "default"}, None, None, True)
    assert supervisor.handles("django:shop.tasks.mail", "default")
    assert not any(supervisor.handles(key, "default") for key in ("djangox:a", "Django:a", "django"))


def test_a_supervisor_without_a_handler_leaves_its_tasks_to_one_with_it(env: Env,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    env.with_plugins(monkeypatch, "tests.handlers.tasks,tests.handlers.workflow_tasks")  # this process knows square
    old = start(env, 1, extra_env={"GTA_PLUGINS": "tests.handlers.tasks"})  # a supervisor that does not
    square = gta_core.submit(gta_core.OWN_TRANSACTION, "square", {"n": 3})
    record = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1})
    assert env.wait_final([record]) == {record: "succeeded"}  # leased after square was due, in one lease
    assert untouched(env, square)

    (missing,) = wait_for(lambda: unhandled_now(env.store), what="the roster to name the unhandled task")
    assert (missing.key, missing.queue, missing.waiting) == ("square", "default", 1)
    assert [state.pid for state in supervisors(env.store) if state.live] == [old.pid]
    assert "warning: no live supervisor handles key 'square' in queue 'default': 1 due task(s) waiting" in ok("stats")
    assert json.loads(ok("stats", "--json"))["unhandled"][0]["waiting"] == 1
    stats = read_stats(env.store, load_settings())
    assert stats.unhandled[("default", "square")] == 1 and stats.unhandled[("default", "record")] == 0

    new = start(env, 1, extra_env={"GTA_PLUGINS": "tests.handlers.tasks,tests.handlers.workflow_tasks"})
    assert env.wait_final([square]) == {square: "succeeded"}
    assert gta_core.result(square) == gta_core.TaskResult("succeeded", 9)
    assert unhandled_now(env.store) == []
    assert stop(old) == 0 and stop(new) == 0
    assert supervisors(env.store) == []  # a stopping supervisor removes its row


def test_the_monitor_reports_unhandled_tasks_by_key(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    ids = [pending_unknown(env) for _ in range(3)]
    found = [task for group in unhandled_now(env.store) for task in env.store.pending_due(group.key, group.queue, 10)]
    assert sorted(task["id"] for task in found) == ids
    with caplog.at_level(logging.WARNING, "gta.monitor"):
        monitor.gta_abnormal_tasks("unhandled", found)
    assert "no live supervisor handles key 'send_email' in queue 'default': 3 due task(s) waiting" in caplog.text


def test_gta_demo_takes_no_task_of_another_application(env: Env) -> None:
    """Neither one it has no handler for, nor one of a handler this environment loads, nor a
    periodic slot: the demo's tasks run in a queue of their own, on supervisors of its own."""
    unknown = pending_unknown(env)
    known = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1})
    result = gta("demo", timeout=120)  # with the monitor and cleanup loaded too
    assert result.returncode == 0, result.stdout + result.stderr
    assert untouched(env, unknown) and untouched(env, known)
    demos = [task for task in env.store.list_tasks(limit=100) if task["id"] not in (unknown, known)]
    assert {task["queue"] for task in demos} == {"gta_demo"}
    assert {task["key"] for task in demos} == {"demo_hello", "demo_flaky", "demo_broken"}
