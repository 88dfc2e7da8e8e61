"""The supervisor's background loops (gta_core/services) cannot be lost silently, and neither
can a worker's threads.

A loop killed for real (the ``tests.handlers.poison`` plugin makes its next iteration raise) is
logged with its traceback, counted in ``gta_service_restarts_total``, restarted, and named
by ``/healthz`` meanwhile; one stuck in an iteration is reported too. A worker whose thread
dies exits with code 5 and is replaced, and its task still runs.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

import gta_core
from gta_core.metrics.health import DatabaseCheck, SupervisorStatus, evaluate
from gta_core.supervisor.services import Service, ServiceRunner

from ..support.helpers import Env, wait_for
from ..support.metrics import health, scrape, total, with_metrics


class Loop(Service):
    """A loop to break on demand: ``fail`` makes the next iteration raise, ``hang`` holds it."""

    name = "loop"

    def __init__(self) -> None:
        self.iterations = 0
        self.closed = 0
        self.fail = threading.Event()
        self.hang = threading.Event()

    def step(self, done: threading.Event) -> None:
        if self.fail.is_set():
            self.fail.clear()
            raise RuntimeError("poisoned")
        while self.hang.is_set() and not done.is_set():
            done.wait(0.01)
        self.iterations += 1
        done.wait(0.01)

    def close(self) -> None:
        self.closed += 1


def test_a_loop_that_dies_is_logged_counted_reported_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    loop, done, restarted = Loop(), threading.Event(), []
    runner = ServiceRunner([loop], done, stuck_after=0.5, on_restart=restarted.append)
    runner.start()
    try:
        wait_for(lambda: loop.iterations > 0, 10, "the loop to run")
        assert runner.health() == {"loop": {"ok": True, "restarts": 0}}
        with caplog.at_level(logging.ERROR, logger="gta.services"):
            loop.fail.set()
            wait_for(lambda: not runner.health()["loop"]["ok"], 10, "the death to be reported")
        assert runner.health()["loop"] == {"ok": False, "restarts": 0,
                                           "error": "not running: RuntimeError: poisoned"}
        died = [record for record in caplog.records if "service loop died" in record.getMessage()]
        assert died and died[0].exc_info is not None and "poisoned" in str(died[0].exc_info[1])
        assert loop.closed == 1 and restarted == []  # not before its backoff
        runner.watch()
        assert restarted == []
        wait_for(lambda: (runner.watch(), restarted)[1], 10, "the restart")
        assert restarted == ["loop"]
        before = loop.iterations
        wait_for(lambda: loop.iterations > before, 10, "the restarted loop to run")
        assert runner.health() == {"loop": {"ok": True, "restarts": 1}}

        with caplog.at_level(logging.ERROR, logger="gta.services"):
            loop.hang.set()
            wait_for(lambda: not runner.health()["loop"]["ok"], 10, "the stuck loop to be reported")
            runner.watch()
            runner.watch()
        assert runner.health()["loop"]["error"].startswith("stuck: one iteration has run for")
        assert sum("service loop is stuck" in record.getMessage() for record in caplog.records) == 1
        loop.hang.clear()
        wait_for(lambda: runner.health()["loop"]["ok"], 10, "the loop to get unstuck")
    finally:
        done.set()
        runner.join(10)
    assert not runner.health()["loop"]["ok"] and loop.closed == 2


def poison(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, target: str) -> Path:
    """Load the ``tests.handlers.poison`` plugin aimed at ``target``; creating the returned file fires it."""
    trigger = tmp_path / "poison"
    monkeypatch.setenv("GTA_PLUGINS", "tests.handlers.tasks,tests.handlers.poison")
    monkeypatch.setenv("GTA_TEST_POISON", target)
    monkeypatch.setenv("GTA_TEST_POISON_FILE", str(trigger))
    return trigger


def test_the_rescuer_killed_for_real_comes_back(env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The rescuer's iteration raises once in a real supervisor: the log has the traceback,
    /healthz is 503 naming the rescuer until it is back, the restart is counted, and the
    restarted rescuer rescues an expired lease."""
    trigger = poison(monkeypatch, tmp_path, "rescuer")
    supervisor, bind = with_metrics(env, 1)
    wait_for(lambda: health(bind)[0] == 200, 30, "healthy")
    assert health(bind)[1]["services"]["rescuer"] == {"ok": True, "restarts": 0}
    assert total(scrape(bind), "gta_service_restarts_total", service="janitor") == 0  # exported at 0

    trigger.touch()
    status, body = wait_for(lambda: (reply := health(bind))[0] == 503 and reply, 30, "503 while the rescuer is down")
    assert body["services"]["ok"] is False, body
    assert body["services"]["rescuer"]["ok"] is False and "poisoned" in body["services"]["rescuer"]["error"], body
    assert body["supervisor"]["ok"] and body["workers"]["ok"] and body["database"]["ok"], body
    status, body = wait_for(lambda: (reply := health(bind))[0] == 200 and reply, 30, "healthy again")
    assert body["services"]["rescuer"] == {"ok": True, "restarts": 1}
    wait_for(lambda: total(scrape(bind), "gta_service_restarts_total", service="rescuer") == 1, 10, "the count")
    log = supervisor.log()
    assert "service rescuer died (RuntimeError: poisoned)" in log and "Traceback" in log, log[-3000:]
    assert "service rescuer restarted" in log, log[-3000:]

    # a lease nobody renews, on a queue this supervisor's worker does not serve
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1}, queue="elsewhere")
    assert [task.id for task in env.store.lease("ghost", ["elsewhere"], 1, 0.1)] == [task_id]
    wait_for(lambda: (row := env.store.get(task_id)) is not None and row["status"] == "pending", 30,
             "the restarted rescuer to rescue the expired lease")


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("thread", ["heartbeat", "completer", "handler"])
def test_a_worker_whose_thread_dies_exits_5_and_is_replaced(env: Env, monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path, thread: str) -> None:
    poison(monkeypatch, tmp_path, thread).touch()
    supervisor = env.supervisor(1, wait_ready=False)
    wait_for(lambda: "exit code 5" in supervisor.log(), 30, "the worker to exit 5")
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1})
    assert env.wait_final([task_id]) == {task_id: "succeeded"}
    log = supervisor.log()
    assert f"worker thread gta-{thread}" in log and "died; exiting so the supervisor replaces" in log, log[-3000:]
    assert "RuntimeError: poisoned" in log, log[-3000:]


def test_healthz_is_unhealthy_while_a_loop_is_down() -> None:
    now = 1000.0
    loops = {"rescuer": {"ok": True, "restarts": 1}, "janitor": {"ok": True, "restarts": 0}}
    fine = SupervisorStatus(1, now - 1, 2, 2, None, False, loops)
    healthy, body = evaluate(fine, True, DatabaseCheck(True), now)
    assert healthy and body["services"] == {"ok": True, **loops}
    down = {**loops, "rescuer": {"ok": False, "restarts": 1, "error": "not running: RuntimeError: x"}}
    healthy, body = evaluate(SupervisorStatus(1, now - 1, 2, 2, None, False, down), True, DatabaseCheck(True), now)
    assert not healthy and body["status"] == "unhealthy" and body["services"]["ok"] is False
    assert body["services"]["rescuer"]["error"] == "not running: RuntimeError: x"
