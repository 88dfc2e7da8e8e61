"""The metrics sidecar, its dashboard and alerts, checked against a real Prometheus.

Process tests start real ``gta-supervisor`` processes, each with its sidecar on a free
port; the end-to-end test reads every metric back through Prometheus's query API and
compares it with what the database says. Every wait is a bounded `wait_for`.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml

import gta_core
from gta_core.metrics.database_gauges import QueueProbe
from gta_core.metrics.health import DatabaseCheck, SupervisorStatus, evaluate
from gta_core.metrics.multiproc import MultiprocDir

from ..support.helpers import Env, SupervisorProcess, children, cmdline, is_alive, wait_for, wait_gone
from ..support.metrics import health, scrape, total, with_metrics
from ..support.paths import IMPORT_ROOT, REPO
from ..support.servers import Prometheus, TcpProxy, free_port, http_get
from ..support.supervisors import entries, stop

DASHBOARD = REPO / "dashboards" / "gta.json"
ALERTS = REPO / "dashboards" / "alerts.yml"
ALERTS_TEST = REPO / "tests" / "support" / "alerts_test.yml"  # promtool's unit tests of ALERTS
#: The names fixed by DESIGN.md ("Metrics").
DESIGN_NAMES = {
    "gta_tasks_started_total", "gta_tasks_completed_total", "gta_task_duration_seconds", "gta_task_wait_seconds",
    "gta_queue_depth", "gta_oldest_pending_age_seconds", "gta_workers", "gta_worker_restarts_total",
    "gta_leases_rescued_total", "gta_leases_lost_total", "gta_abnormal_tasks",
    "gta_queue_paused",  # added with the queue controls (gta pause, issue 19)
    "gta_unhandled_tasks",  # added with the roster of supervisors (no live supervisor handles a key, issue 27)
}
#: documented beyond DESIGN.md's list (docs/architecture.md, departures)
ADDED_NAMES = {"gta_service_restarts_total"}
HISTOGRAMS = {"gta_task_duration_seconds", "gta_task_wait_seconds"}
METRIC_NAME = re.compile(r"\bgta_[a-z_]+\b")


# -- helpers ----------------------------------------------------------------------------------------
@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[str], Prometheus]]:
    """Start a Prometheus scraping a target; every one started is killed at the end."""
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        server = Prometheus(tmp_path, target)
        started.append(server)
        wait_for(lambda: server.scalar('up{job="gta"}') == 1, what="prometheus to scrape the sidecar")
        return server

    yield start
    for server in started:
        server.stop()


def ledger(env: Env, phase: str, task_id: int) -> list[dict[str, Any]]:
    return [entry for entry in env.ledger_entries() if entry["phase"] == phase and entry["id"] == task_id]


def wait_ledger(env: Env, phase: str, task_id: int, count: int = 1) -> list[dict[str, Any]]:
    return wait_for(lambda: found if len(found := ledger(env, phase, task_id)) >= count else None,
                    what=f"{count} {phase!r} ledger entries of task {task_id}")


def table_rows(env: Env) -> list[tuple[str, str, str, int, dt.datetime | None]]:
    """(key, queue, status, attempts, run_at) of every row."""
    d = env.store.sql.dialect
    cursor = env.runtime.db.execute_sql(f"SELECT {d.q('key')}, queue, status, attempts, run_at FROM {env.table}")
    from gta_core.store.task_store import parse_timestamp
    return [(key, queue, status, int(attempts), parse_timestamp(run_at))
            for key, queue, status, attempts, run_at in cursor.fetchall()]


def database_says(env: Env) -> dict[str, Any]:
    """What the counters must show, derived from the rows.

    Every started attempt is counted in the row's ``attempts``; it ended succeeded or failed
    when it is the last attempt of a finished row, is in flight when the row is running, and
    ended ``retried`` otherwise.
    """
    rows = table_rows(env)
    started: dict[str, int] = {}
    for key, _, _, attempts, _ in rows:
        started[key] = started.get(key, 0) + attempts
    count = {status: sum(1 for row in rows if row[2] == status) for status in ("succeeded", "failed", "running")}
    retried = sum(started.values()) - count["succeeded"] - count["failed"] - count["running"]
    outcomes = {"succeeded": count["succeeded"], "retried": retried, "failed": count["failed"]}
    return {"started": {key: float(n) for key, n in started.items() if n},
            "completed": {outcome: float(n) for outcome, n in outcomes.items() if n}}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    exprs += [variable["definition"] for variable in dashboard["templating"]["list"]]
    return exprs


def alert_exprs() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def metric_names(exprs: list[str]) -> set[str]:
    return {name for expr in exprs for name in METRIC_NAME.findall(expr)}


def base_name(name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix) and name[: -len(suffix)] in HISTOGRAMS:
            return name[: -len(suffix)]
    return name


def sidecar_pid(process: SupervisorProcess) -> int | None:
    found = [pid for pid in children(process.pid) if "gta_core.metrics.sidecar" in cmdline(pid)]
    return found[0] if found else None


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


# -- the end-to-end test ----------------------------------------------------------------------------
def test_prometheus_reads_back_what_the_database_says(env: Env, prometheus: Callable[[str], Prometheus]) -> None:
    supervisor, bind = with_metrics(env, 2, "--lease-timeout", "3", "--running-timeout", "1",
                                    "--initialized-timeout", "1")
    prom = prometheus(bind)

    # successes, retries and failures
    ids = gta_core.submit_many(gta_core.OWN_TRANSACTION, [("record", {"n": n}) for n in range(5)]
                               + [("flaky", {"failures": 2})] * 2 + [("always_fails", {})] * 2
                               + [("fails_for_good", {})])
    statuses = env.wait_final(ids)
    assert sorted(statuses.values()) == ["failed"] * 3 + ["succeeded"] * 7

    # a rescued lease, and the lost write of the worker that had it: freeze the worker
    # running the task until its lease expires and the other worker runs it again
    slow = gta_core.submit(gta_core.OWN_TRANSACTION, "sleepy", {"seconds": 5})
    frozen = wait_ledger(env, "start", slow)[0]["pid"]
    os.kill(frozen, signal.SIGSTOP)
    try:
        rerun = wait_ledger(env, "start", slow, 2)[1]
    finally:
        os.kill(frozen, signal.SIGCONT)
    assert rerun["pid"] != frozen
    assert env.wait_final([slow]) == {slow: "succeeded"}

    # live gauges: two tasks of a queue nobody serves, one delayed, one running for long
    for n in range(2):
        gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": n}, queue="orphan")
    gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 99}, delay=3600)
    busy = gta_core.submit(gta_core.OWN_TRANSACTION, "sleepy", {"seconds": 120})
    wait_ledger(env, "start", busy)
    time.sleep(1.2)  # the gauges below are about durations: orphans due and busy running > 1 s

    def gauges_match() -> bool:
        depth = {(labels["queue"], labels["status"]): value for labels, value in
                 prom.query("max by (queue, status) (gta_queue_depth)")}
        abnormal = {(labels["queue"], labels["kind"]): value for labels, value in
                    prom.query("max by (queue, kind) (gta_abnormal_tasks)")}
        workers = prom.by("sum by (state) (gta_workers)", "state")
        unhandled = {(labels["queue"], labels["task"]): value for labels, value in
                     prom.query("max by (queue, task) (gta_unhandled_tasks) > 0")}
        return (depth == {("default", "pending"): 1, ("default", "running"): 1, ("default", "waiting"): 0,
                          ("orphan", "pending"): 2, ("orphan", "running"): 0, ("orphan", "waiting"): 0}
                and unhandled == {("orphan", "record"): 2}  # the delayed one is not due
                and abnormal == {("default", "initialized_timeout"): 0, ("default", "running_timeout"): 1,
                                 ("orphan", "initialized_timeout"): 2, ("orphan", "running_timeout"): 0}
                and workers == {"busy": 1, "idle": 1, "down": 0})
    wait_for(gauges_match, what="queue, abnormal and worker gauges in prometheus")
    due = min(run_at for _, queue, _, _, run_at in table_rows(env) if queue == "orphan" and run_at)
    age = (dt.datetime.now(dt.timezone.utc) - due).total_seconds()
    oldest = prom.by("max by (queue) (gta_oldest_pending_age_seconds)", "queue")
    assert oldest["default"] == 0  # its only pending task is not due yet
    assert age - 4 <= oldest["orphan"] <= age + 0.5  # scraped within the last second or three

    # a worker SIGKILLed in the middle of a task: restarted, its counts kept
    victim = wait_ledger(env, "start", busy)[0]["pid"]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(pids := supervisor.worker_pids()) == 2 and victim not in pids, what="a replacement worker")
    wait_ledger(env, "start", busy, 2)

    expected = database_says(env)
    assert expected["completed"]["retried"] >= 2 * 2 + 2 * 2 + 1 + 1  # flaky, always_fails, rescued, killed

    def counters() -> dict[str, Any]:  # the series of what happened (every series exists from the start)
        return {"started": prom.by("sum by (task) (gta_tasks_started_total) > 0", "task"),
                "completed": prom.by("sum by (outcome) (gta_tasks_completed_total) > 0", "outcome")}
    try:
        wait_for(lambda: counters() == expected, what="prometheus counters to match the database")
    except AssertionError:
        assert counters() == expected
    started = sum(expected["started"].values())
    completed = sum(expected["completed"].values())
    assert prom.scalar("sum(gta_task_wait_seconds_count)") == started
    # the rescued attempt and the killed worker's attempt ended in the supervisor, unmeasured
    assert prom.scalar("sum(gta_task_duration_seconds_count)") == completed - 2
    assert prom.scalar("sum(gta_leases_rescued_total)") == 1
    assert prom.by("sum by (task) (gta_leases_lost_total) > 0", "task") == {"sleepy": 1}
    wait_for(lambda: prom.by("sum by (reason) (gta_worker_restarts_total) > 0", "reason") == {"killed": 1},
             what="the restart in prometheus")
    for name in ("gta_tasks_started_total", "gta_tasks_completed_total", "gta_task_duration_seconds_count"):
        assert prom.scalar(f"sum(resets({name}[10m]))") == 0, f"{name} went backwards"
    # over all observations (rate() would miss those made before a series' first scrape)
    p99 = prom.scalar("histogram_quantile(0.99, sum by (le) (gta_task_duration_seconds_bucket))")
    assert p99 is not None and 2.5 < p99 <= 10  # the sleepy(5) attempt is the slowest

    # the dashboard and the alerts use only metrics prometheus has, and every panel shows data
    exported = prom.names()
    assert metric_names(dashboard_exprs() + alert_exprs()) <= exported
    for expr in dashboard_exprs():
        if expr.startswith("label_values("):
            continue
        concrete = expr.replace("$__rate_interval", "5m").replace("$queue", ".*").replace("$task", ".*")
        wait_for(lambda q=concrete: prom.query(q), 10, f"data for the dashboard query {expr}")  # rate(): 2 scrapes
    for expr in alert_exprs():
        prom.query(expr)  # valid PromQL against live data (firing or not)


# -- counters across a worker restart -----------------------------------------------------------------
def test_counters_keep_a_killed_workers_work(env: Env) -> None:
    supervisor, bind = with_metrics(env, 2)
    ids = gta_core.submit_many(gta_core.OWN_TRANSACTION, [("sleepy", {"seconds": 0.2, "n": n}) for n in range(8)])
    env.wait_final(ids)
    by_pid: dict[int, int] = {}
    for entry in env.ledger_entries():
        if entry["phase"] == "end":
            by_pid[entry["pid"]] = by_pid.get(entry["pid"], 0) + 1
    victim = max(by_pid, key=lambda pid: by_pid[pid])
    assert by_pid[victim] >= 1 and victim in supervisor.worker_pids()
    before = scrape(bind)
    assert total(before, "gta_tasks_started_total") == 8
    assert total(before, "gta_tasks_completed_total", outcome="succeeded") == 8

    # scrape continuously while the worker dies, is reaped, retired and replaced
    seen: list[float] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(total(scrape(bind), "gta_tasks_completed_total"))
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(pids := supervisor.worker_pids()) == 2 and victim not in pids,
                 what="a replacement worker")
        # the sidecar's: a worker's /proc environ is its fork server's, from before the directory existed
        sidecar = sidecar_pid(supervisor)
        assert sidecar is not None
        multiproc = Path(environ_of(sidecar)["PROMETHEUS_MULTIPROC_DIR"])
        wait_for(lambda: not (multiproc / f"counter_{victim}.db").exists(), what="the dead worker's files retired")
        more = gta_core.submit_many(gta_core.OWN_TRANSACTION,
                                    [("sleepy", {"seconds": 0.2, "n": n}) for n in range(8, 16)])
        env.wait_final(more)
    finally:
        done.set()
        watcher.join()
    assert seen and seen == sorted(seen), "the completed total went backwards during the restart"
    assert (multiproc / "counter_archive.db").exists() and (multiproc / "histogram_archive.db").exists()

    def counts() -> tuple[float, ...]:
        after = scrape(bind)
        return (total(after, "gta_tasks_started_total"),
                total(after, "gta_tasks_completed_total", outcome="succeeded"),
                total(after, "gta_task_duration_seconds_count"),
                total(after, "gta_worker_restarts_total", reason="killed"))
    assert counts() == (16, 16, 16, 1)
    assert {row[2] for row in table_rows(env)} == {"succeeded"}


# -- health ---------------------------------------------------------------------------------------------
def test_healthz_follows_the_database(env: Env, backend: str) -> None:
    if backend == "sqlite":
        pytest.skip("server databases only, by design: a SQLite file cannot be made unreachable without breaking "
                    "the workers' open connections; the outage runs through a TCP proxy")
    url = urlsplit(env.db_url)
    proxy = TcpProxy((url.hostname or "127.0.0.1", url.port or (5432 if backend == "postgres" else 3306)))
    proxy.start()
    try:
        proxied = urlunsplit(url._replace(netloc=url.netloc.replace(f"{url.hostname}:{url.port}",
                                                                    f"127.0.0.1:{proxy.port}")))
        assert proxied != env.db_url
        _, bind = with_metrics(env, 1, "--database-url", proxied)
        status, body = wait_for(lambda: (reply := health(bind))[0] == 200 and reply[1]["workers"]["live"] == 1
                                and reply, what="healthy with its worker")
        assert body["database"] == {"ok": True, "error": None}
        assert body["workers"] == {"ok": True, "live": 1, "expected": 1}

        proxy.stop()
        status, body = wait_for(lambda: (reply := health(bind))[0] == 503 and reply, what="503 during the outage")
        assert body["status"] == "unhealthy" and body["database"]["ok"] is False and body["database"]["error"]
        assert body["supervisor"]["ok"] and body["workers"]["ok"]
        samples = scrape(bind)  # the processes' metrics are still served; the database's are left out
        assert total(samples, "gta_workers") == 1
        assert not any(name == "gta_queue_depth" for name, _ in samples)

        proxy.start()
        status, body = wait_for(lambda: (reply := health(bind))[0] == 200 and reply, what="healthy again")
        assert body["status"] == "ok"
        assert any(name == "gta_queue_depth" for name, _ in scrape(bind))
    finally:
        proxy.stop()


def documented_series() -> dict[str, list[str]]:
    """Each metric of docs/metrics.md's reference table, with its labels."""
    rows = re.findall(r"^\| `(gta_[a-z_]+)` \| \w+ \| ([a-z, ]*) \|", (REPO / "docs" / "metrics.md").read_text(), re.M)
    return {name: [label.strip() for label in labels.split(",") if label.strip()] for name, labels in rows}


def test_every_documented_series_is_exported_at_zero_before_any_task(env: Env) -> None:
    """A counter absent until its first event is invisible to rate() and to the alerts."""
    _, bind = with_metrics(env, 1, "--queues", "default,mail")
    tasks = [(key, definition.queue) for key, definition in env.runtime.plugins.registry.tasks.items()]
    expected: dict[str, set[tuple[tuple[str, str], ...]]] = {}
    for name, labels in documented_series().items():
        values: dict[str, list[str]] = {
            "outcome": ["succeeded", "retried", "failed"], "reason": ["crashed", "killed", "recycled"],
            "state": ["busy", "idle", "down"], "status": ["pending", "running", "waiting"],
            "kind": ["initialized_timeout", "running_timeout"], "service": ["rescuer", "janitor"]}
        if "task" in labels:  # each registered task on its own queue
            combos = [{"task": key, "queue": queue} for key, queue in tasks]
        elif "queue" in labels:  # each served queue
            combos = [{"queue": queue} for queue in ("default", "mail")]
        else:
            combos = [{}]
        for label in set(labels) - {"task", "queue"}:
            combos = [{**combo, label: value} for combo in combos for value in values[label]]
        expected[name] = {tuple(sorted(combo.items())) for combo in combos}
    assert set(expected) == DESIGN_NAMES | ADDED_NAMES

    def missing() -> list[str]:
        samples = scrape(bind)
        seen: dict[str, set[tuple[tuple[str, str], ...]]] = {}
        for name, labels in samples:
            if not name.endswith(("_bucket", "_created")):
                seen.setdefault(base_name(name), set()).add(labels)
        return [f"{name}{dict(labels)}" for name, combos in expected.items() for labels in combos
                if labels not in seen.get(name, set())]
    wait_for(lambda: not missing(), what="every documented series in a fresh sidecar's scrape")
    samples = scrape(bind)
    counted = {name for name in DESIGN_NAMES | ADDED_NAMES if name.endswith("_total")} | HISTOGRAMS
    assert {value for (name, _), value in samples.items() if base_name(name) in counted} == {0.0}
    scraped = {base_name(name) for name, _ in samples}
    assert metric_names(alert_exprs()) | {base_name(name) for name in metric_names(dashboard_exprs())} <= scraped


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sidecar_lives_and_dies_with_its_supervisor(env: Env) -> None:
    supervisor, bind = with_metrics(env, 1)
    assert http_get(f"http://{bind}/nowhere")[0] == 404
    first = sidecar_pid(supervisor)
    assert first is not None
    multiproc = Path(environ_of(first)["PROMETHEUS_MULTIPROC_DIR"])
    assert multiproc.is_dir() and multiproc.name.startswith(f"gta-metrics-{supervisor.pid}-")

    os.kill(first, signal.SIGKILL)  # the supervisor starts a new one
    wait_for(lambda: sidecar_pid(supervisor) not in (None, first) and http_get(f"http://{bind}/healthz")[0] == 200,
             what="a new sidecar")
    assert "metrics sidecar exited" in supervisor.log()

    current = sidecar_pid(supervisor)
    assert current is not None
    supervisor.signal(signal.SIGTERM)  # a clean stop takes the sidecar and the directory along
    assert supervisor.wait() == 0
    assert not is_alive(current) and not multiproc.exists()
    assert http_get(f"http://{bind}/metrics", 2)[0] == 0

    second, bind = with_metrics(env, 1)
    sidecar = sidecar_pid(second)
    assert sidecar is not None
    second.popen.kill()  # SIGKILL: nothing cleans up, the sidecar must notice by itself
    second.wait()
    wait_gone([sidecar], 15)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_second_supervisor_on_a_taken_metrics_port_fails_at_start(env: Env) -> None:
    """Two supervisors on one host with one port (the default, say): the second one stops at
    once with one line naming the address and the setting, rather than running without metrics."""
    first, bind = with_metrics(env, 1)
    second = env.supervisor(1, "--metrics", "on", "--metrics-bind", bind, wait_ready=False)
    assert second.wait() == 2
    lines = second.log().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("gta-supervisor: error: metrics address ") and bind in lines[0], lines[0]
    assert "already in use" in lines[0] and "--metrics-bind" in lines[0] and "GTA_METRICS_BIND" in lines[0]
    assert not children(second.pid)
    status, body = health(bind)  # the first one's sidecar still answers for it
    assert status == 200 and body["supervisor"]["pid"] == first.pid


@pytest.mark.parametrize("backend", ["sqlite"])
def test_port_zero_serves_on_a_free_port_that_is_logged(env: Env) -> None:
    supervisor = env.supervisor(1, "--metrics", "on", "--metrics-bind", "127.0.0.1:0", "--log-level", "INFO")
    found = wait_for(lambda: re.search(r"metrics sidecar started \(pid \d+\) on http://(127\.0\.0\.1:\d+)/metrics",
                                       supervisor.log()), what="the sidecar's address in the log")
    bind = found.group(1)
    assert not bind.endswith(":0")
    wait_for(lambda: health(bind)[0] == 200, what="the sidecar on the logged port")
    assert health(bind)[1]["supervisor"]["pid"] == supervisor.pid


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("how", [("--no-metrics",), ("--metrics", "off")], ids=["flag", "switch"])
def test_metrics_can_be_turned_off(env: Env, how: tuple[str, ...]) -> None:
    bind = f"127.0.0.1:{free_port()}"
    supervisor = env.supervisor(1, *how, "--metrics-bind", bind)
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1})
    assert env.wait_final([task_id]) == {task_id: "succeeded"}
    assert sidecar_pid(supervisor) is None
    assert http_get(f"http://{bind}/metrics", 2)[0] == 0
    assert "PROMETHEUS_MULTIPROC_DIR" not in environ_of(supervisor.worker_pids()[0])


def test_workers_start_with_prometheus_client_imported_in_multiprocess_mode(env: Env,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The fork server imports prometheus_client once the supervisor has made its metrics
    directory: no worker's first task waits for that import, and every worker's values go to the
    directory (the mode prometheus_client fixes on import)."""
    env = env.with_plugins(monkeypatch, "tests.handlers.tasks,tests.handlers.boot_probe")
    supervisor = env.supervisor(2, "--metrics", "on", "--metrics-bind", "127.0.0.1:0")
    workers = set(supervisor.worker_pids())
    booted = wait_for(lambda: (found := [entry for entry in entries(env, "boot") if entry["pid"] in workers])
                      and len(found) == 2 and found, 30, "both workers to load their plugins")
    assert [(entry["prometheus_client"], entry["multiprocess"]) for entry in booted] == [(True, True)] * 2
    assert stop(supervisor) == 0


def test_health_rules() -> None:
    now = 1000.0
    fine = SupervisorStatus(pid=1, written_at=now - 1, workers=2, live=2, down_since=None, stopping=False)
    up = DatabaseCheck(True)
    assert evaluate(fine, True, up, now)[0]
    restarting = SupervisorStatus(1, now - 1, 2, 1, now - 3, False)
    assert evaluate(restarting, True, up, now)[0]  # within the grace of a restart
    assert not evaluate(SupervisorStatus(1, now - 1, 2, 1, now - 30, False), True, up, now)[0]
    assert not evaluate(fine, False, up, now)[0]  # supervisor gone
    assert not evaluate(SupervisorStatus(1, now - 30, 2, 2, None, False), True, up, now)[0]  # main loop stuck
    assert not evaluate(SupervisorStatus(1, now - 1, 2, 2, None, True), True, up, now)[0]  # draining
    assert not evaluate(None, True, up, now)[0]
    healthy, body = evaluate(fine, True, DatabaseCheck(False, "connection refused"), now)
    assert not healthy and body["database"] == {"ok": False, "error": "connection refused"}
    assert body["status"] == "unhealthy"


# -- the database gauges ------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["sqlite"])
def test_queue_gauges_are_read_at_most_once_per_interval(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from gta_core.metrics import database_gauges

    starts: list[float] = []
    real = database_gauges.read_stats

    def counting(store: Any, settings: Any) -> Any:
        starts.append(time.monotonic())
        return real(store, settings)
    monkeypatch.setattr(database_gauges, "read_stats", counting)
    gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1})
    probe = QueueProbe(env.runtime.settings, min_interval=0.3)
    deadline = time.monotonic() + 1.0

    def hammer() -> None:
        while time.monotonic() < deadline:
            stats = probe.stats(5)
            assert stats.error is None and stats.depth == {("default", "pending"): 1}
    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 2 <= len(starts) <= 4
    assert all(later - earlier >= 0.3 for earlier, later in zip(starts, starts[1:], strict=False))


EXPLAIN = {
    "sqlite": "EXPLAIN QUERY PLAN {sql}",
    "postgres": "EXPLAIN {sql}",
    "mariadb": "EXPLAIN {sql}",
}


def test_queue_gauge_queries_skip_finished_rows(env: Env, backend: str) -> None:
    """The gauges' queries go through the pending/running indexes, never a scan of the table."""
    ids = gta_core.submit_many(gta_core.OWN_TRANSACTION, [("record", {"n": n}) for n in range(2000)])
    db, table = env.runtime.db, env.table
    db.execute_sql(f"UPDATE {table} SET status = 'succeeded' WHERE id <= {ids[-20]}")
    env.store.lease("someone", ["default"], 5, 60)
    db.execute_sql({"sqlite": "ANALYZE", "postgres": f"ANALYZE {table}", "mariadb": f"ANALYZE TABLE {table}"}[backend])
    if backend == "postgres":
        db.execute_sql("SET enable_seqscan = off")  # an unusable index would still show as a Seq Scan
    try:
        minus_a_minute = (env.store.sql.dialect.seconds_param(-60),)
        for sql, index, params in ((env.store.sql.pending_by_key, f"{table}_lease", minus_a_minute),
                                   (env.store.sql.running_summary, f"{table}_", minus_a_minute),
                                   (env.store.sql.waiting_summary,
                                    f"{table}_lease" if backend == "mariadb" else f"{table}_waiting", ())):
            plan = db.execute_sql(EXPLAIN[backend].format(sql=sql), params).fetchall()
            text = " ".join(str(part) for row in plan for part in row)
            assert index in text, plan
            if backend == "sqlite":
                assert all("USING" in str(row[-1]) for row in plan if str(row[-1]).startswith("SCAN")), plan
            elif backend == "postgres":
                assert "Seq Scan" not in text, plan
            else:
                assert all(row[3] != "ALL" for row in plan), plan
    finally:
        if backend == "postgres":
            db.execute_sql("RESET enable_seqscan")


# -- the multiprocess directory ---------------------------------------------------------------------------
WRITER = textwrap.dedent("""
    from prometheus_client import Counter, Gauge, Histogram
    Counter("t_done_total", "done", ["task"]).labels(task="a").inc(3)
    Histogram("t_seconds", "seconds", buckets=(1.0, 5.0)).observe(0.5)
    Gauge("t_live", "live", multiprocess_mode="livesum").set(7)
""")


def collect(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in registry.collect() for sample in family.samples}


def test_retiring_a_dead_process_keeps_its_totals(tmp_path: Path) -> None:
    directory = MultiprocDir(tmp_path)
    (tmp_path / "collect.lock").touch()
    pids = []
    for _ in range(2):
        writer = subprocess.run([sys.executable, "-c", WRITER + "import os; print(os.getpid())"], check=True,
                                capture_output=True, text=True,
                                env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
        pids.append(int(writer.stdout))
    before = collect(tmp_path)
    assert total(before, "t_done_total") == 6 and total(before, "t_live") == 14

    with directory.reading():
        assert directory.retire(pids[0]) is False  # a scrape is reading: nothing changes
    assert collect(tmp_path) == before

    assert directory.retire(pids[0]) is True
    assert not list(tmp_path.glob(f"*_{pids[0]}.db"))
    after = collect(tmp_path)
    assert {key: value for key, value in after.items() if key[0] != "t_live"} == \
           {key: value for key, value in before.items() if key[0] != "t_live"}
    assert total(after, "t_live") == 7  # a live gauge of a dead process is gone
    assert directory.retire(pids[1]) is True
    assert total(collect(tmp_path), "t_done_total") == 6
    assert total(collect(tmp_path), "t_seconds_bucket", le="1.0") == 2
    assert sorted(path.name for path in tmp_path.glob("*.db")) == ["counter_archive.db", "histogram_archive.db"]

    # a process killed while creating its file leaves it empty: never read, and retired cleanly
    (tmp_path / "counter_4242.db").touch()
    with directory.reading() as files:
        assert sorted(Path(name).name for name in files) == ["counter_archive.db", "histogram_archive.db"]
    assert directory.retire(4242) is True and not (tmp_path / "counter_4242.db").exists()
    assert total(collect(tmp_path), "t_done_total") == 6


@pytest.mark.parametrize("amounts", [[], [0.005], [0.001, 0.005, 0.0051, 1.0, 7.0, 7.0, -1.0, 99999.0]])
def test_a_batch_of_observations_exports_what_one_by_one_would(amounts: list[float]) -> None:
    """`observe_all` writes a histogram's internals directly; it must agree with ``observe``,
    bucket bounds included (an amount equal to a bound belongs to that bound's bucket)."""
    from prometheus_client import CollectorRegistry, Histogram

    from gta_plugins.metrics import BUCKETS, observe_all

    def exported(record: Callable[[Any], None]) -> dict[tuple[str, str], float]:
        registry = CollectorRegistry()
        record(Histogram("t_seconds", "t", ["task"], buckets=BUCKETS, registry=registry).labels("k"))
        return {(sample.name, sample.labels.get("le", "")): sample.value
                for metric in registry.collect() for sample in metric.samples if not sample.name.endswith("_created")}

    def one_by_one(histogram: Any) -> None:
        for amount in amounts:
            histogram.observe(amount)

    expected = exported(one_by_one)
    assert exported(lambda histogram: observe_all(histogram, amounts)) == pytest.approx(expected)
    assert expected[("t_seconds_count", "")] == len(amounts)


def test_submitting_never_imports_prometheus_client(tmp_path: Path) -> None:
    """Only the supervisor's own set-up may decide prometheus_client's mode."""
    script = textwrap.dedent(f"""
        import sys
        import gta_core, gta_core.cli.main, gta_core.supervisor.manager, gta_core.metrics.host, gta_core.metrics.sidecar
        import gta_plugins.metrics
        runtime = gta_core.configure(database_url="sqlite:///{tmp_path / 'app.db'}", plugins="tests.handlers.tasks")
        runtime.store.migrate()
        assert "metrics" in [name for name, _ in runtime.plugins.manager.list_name_plugin()]
        gta_core.submit(gta_core.OWN_TRANSACTION, "record", {{"n": 1}})
        assert "prometheus_client" not in sys.modules, "imported"
        print("ok")
    """)
    environ = {name: value for name, value in os.environ.items() if not name.startswith("GTA_")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                            env={**environ, "PYTHONPATH": str(IMPORT_ROOT)})
    assert result.stdout.strip() == "ok", result.stderr


# -- the dashboard and the alerts ----------------------------------------------------------------------------
def test_dashboard_and_alerts_use_only_the_designed_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert [item["name"] for item in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]

    used = {base_name(name) for name in metric_names(dashboard_exprs())}
    assert used == DESIGN_NAMES  # built only from these names, and shows every one
    assert {base_name(name) for name in metric_names(alert_exprs())} <= DESIGN_NAMES
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("outcome", "duration", "wait", "queue depth", "oldest pending", "busy", "restarts",
                  "rescued", "lost", "abnormal", "paused"):
        assert topic in titles, topic


def test_promtool_accepts_the_alerts() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed (scripts/test installs it: scripts/prerequisites.txt)"
    result = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout
    alerts = {rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]}
    assert {"GTATasksStuckRunning", "GTABacklogGrowing", "GTAHighFailureRatio", "GTANoWorkers"} <= alerts
    # and each alert fires on the series it is meant for, and not before its `for:` has passed
    unit = subprocess.run([promtool, "test", "rules", str(ALERTS_TEST)],
                          capture_output=True, text=True, cwd=ALERTS_TEST.parent)
    assert unit.returncode == 0 and "SUCCESS" in unit.stdout, unit.stdout + unit.stderr
    tested = set(re.findall(r"alertname: (\w+)", ALERTS_TEST.read_text()))
    assert tested == alerts
