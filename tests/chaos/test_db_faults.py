"""Database faults on private PostgreSQL and MariaDB servers: restarts, killed sessions, outages,
and half-open connections.

Each scenario runs real supervisors against a private server (`servers.py`), or against a
proxy in front of it (`proxy.py`), submits tasks while the fault repeats, and ends with the
harness's invariant check: nothing committed is lost, no task fails because of the database,
no worker crash-loops, and every worker leases again once the database is back (a worker
alive but idle after a reconnect is the failure this looks for).

The test process itself talks to the server directly; only the supervisors go through the
proxy, so a blackhole never stalls the checks.
"""
from __future__ import annotations

import contextlib
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gta_core.db.connect import REPLY_GRACE

from .harness import ChaosHarness, Report, new_table
from .proxy import ChaosProxy
from .servers import PrivateServer, PrivateServers, server_params

pytestmark = pytest.mark.chaos

LEASE = 3.0  # heartbeat every 1 s, rescue every 1 s
SHUTDOWN = 3.0
#: a worker must lease again within this long of the database coming back (its reconnect
#: backoff is capped at scan_interval, 0.5 s here; the rest is a loaded 2-core machine)
RECOVERY_BOUND = 15.0


@pytest.fixture(params=server_params())
def server(request: pytest.FixtureRequest, private_servers: PrivateServers) -> PrivateServer:
    return private_servers.get(request.param)


@pytest.fixture
def proxy(server: PrivateServer) -> Iterator[ChaosProxy]:
    chaos_proxy = ChaosProxy(("127.0.0.1", server.port))
    try:
        yield chaos_proxy
    finally:
        chaos_proxy.close()


@contextlib.contextmanager
def harness_on(server: PrivateServer, tmp_path: Path, **options: object) -> Iterator[ChaosHarness]:
    harness = ChaosHarness(server.url, new_table(), tmp_path, backend=server.backend, lease_timeout=LEASE,
                           shutdown_timeout=SHUTDOWN, **options)  # type: ignore[arg-type]
    try:
        yield harness
    finally:
        server.start()  # a failed scenario may have left it down; the table must still be dropped
        harness.close(drop=True)


def resumed(harness: ChaosHarness, workers: list[int], count: int = 12) -> float:
    """Submit fresh tasks once the database is back; seconds until all are final. Every live
    worker must have run some of them: one that reconnected but never leases again fails."""
    started = time.monotonic()
    ids = harness.submit("chaos_work", [{"seconds": 0.25}] * count)
    statuses = harness.wait_final(ids, RECOVERY_BOUND + 30)
    took = time.monotonic() - started
    assert set(statuses.values()) == {"succeeded"}, statuses
    ran = {execution.pid for execution in harness.executions() if execution.task_id in set(ids)}
    idle = [pid for pid in workers if pid not in ran]
    assert not idle, f"workers {idle} never leased again after the database came back (ran: {sorted(ran)})"
    assert took < RECOVERY_BOUND, f"tasks submitted after the fault took {took:.1f}s (bound {RECOVERY_BOUND}s)"
    return took


def no_database_casualties(report: Report, harness: ChaosHarness) -> None:
    """A database fault may cost attempts, never a failed task or a crashed worker."""
    assert report.failed == 0, report.line()
    assert report.lost == 0, report.line()
    assert report.worker_restarts == 0, f"workers died of a database fault: {report.line()}"
    for process in harness.env.processes:
        assert "died" not in process.log(), process.log()[-4000:]


def test_server_restarted_in_immediate_mode(server: PrivateServer, tmp_path: Path) -> None:
    with harness_on(server, tmp_path) as harness:
        supervisor = harness.supervisor(2)
        workers = supervisor.worker_pids()
        ids = harness.submit("chaos_work", [{"seconds": 0.3}] * 10)
        with harness.stream("chaos_work", {"seconds": 0.1}, batch=2, every=0.3):
            for _ in range(3):
                time.sleep(1.5)
                with harness.faults.window("db-restart-immediate"):
                    server.restart("immediate")
        assert supervisor.worker_pids() == workers
        took = resumed(harness, workers)
        report = harness.check("db-restart-immediate", within=60)
        print(f"recovered in {took:.1f}s")
        no_database_casualties(report, harness)
        assert set(ids) <= set(harness.committed)


def test_connections_killed_from_the_server(server: PrivateServer, tmp_path: Path) -> None:
    with harness_on(server, tmp_path) as harness:
        supervisor = harness.supervisor(2)
        workers = supervisor.worker_pids()
        harness.submit("chaos_work", [{"seconds": 0.3}] * 10)
        killed = 0
        with harness.stream("chaos_work", {"seconds": 0.1}, batch=2, every=0.3):
            for _ in range(4):
                time.sleep(0.8)
                harness.faults.record("db-kill-connections")
                killed += server.kill_connections()
        assert killed >= 4 * 2, f"only {killed} sessions were killed: the scenario did not bite"
        assert supervisor.worker_pids() == workers
        resumed(harness, workers)
        report = harness.check("db-kill-connections", within=60)
        no_database_casualties(report, harness)


def test_server_unreachable_for_several_lease_periods(server: PrivateServer, tmp_path: Path) -> None:
    outage = 3 * LEASE + 1
    with harness_on(server, tmp_path) as harness:
        supervisor = harness.supervisor(2)
        workers = supervisor.worker_pids()
        harness.submit("chaos_work", [{"seconds": 0.5}] * 12)
        harness.wait_started(harness.committed[0])
        with harness.faults.window("db-down"):
            server.stop("immediate")
            time.sleep(outage)
            assert supervisor.worker_pids() == workers, "workers restarted while the database was down"
            server.start()
        took = resumed(harness, workers)
        report = harness.check("db-unreachable", within=60)
        print(f"down {outage:.0f}s, recovered in {took:.1f}s")
        no_database_casualties(report, harness)


def _database_errors(log: str) -> int:
    """Database calls the workers and the supervisor saw fail (and so did not hang on)."""
    return len(re.findall(r"(lease|heartbeat|lease rescue|cancel check) failed|could not record", log))


def test_half_open_connection(server: PrivateServer, proxy: ChaosProxy, tmp_path: Path) -> None:
    """The proxy accepts and swallows, never answers: only the engine's own timeouts notice."""
    blackhole = 2 * LEASE + 2  # past a statement timeout (5 s) and its PostgreSQL grace
    with harness_on(server, tmp_path) as harness:
        via_proxy = {"GTA_DATABASE_URL": server.url_via(proxy.port)}
        supervisor = harness.supervisor(2, extra_env=via_proxy)
        workers = supervisor.worker_pids()
        harness.submit("chaos_work", [{"seconds": 0.4}] * 12)
        harness.wait_started(harness.committed[0])
        with harness.faults.window("db-blackhole"):
            proxy.mode = "blackhole"
            time.sleep(blackhole)
            proxy.mode = "pass"
        assert _database_errors(supervisor.log()), "no timeout noticed the half-open connections:\n" + \
            supervisor.log()[-4000:]
        assert supervisor.worker_pids() == workers
        took = resumed(harness, workers)
        harness.supervisor(2, extra_env=via_proxy)  # finishes what the one stopped below leaves behind

        harness.wait_started(harness.submit("chaos_work", [{"seconds": 0.4}] * 6)[0])
        with harness.faults.window("db-blackhole"):
            proxy.mode = "blackhole"
            time.sleep(1.0)
            started = time.monotonic()
            supervisor.signal(signal.SIGTERM)
            code = supervisor.wait(60)
            stopped = time.monotonic() - started
            proxy.mode = "pass"
        # the supervisor kills its workers shutdown_timeout + 5 s after SIGTERM, joins its
        # database threads for up to a lease period, then tries one release (a statement
        # times out after 5 s here, + REPLY_GRACE on PostgreSQL) unless one of its statements
        # already failed (`Outage`); 5 s of slack for a busy machine. (With 10 s, MariaDB took
        # 27-34 s: the release, the roster row's removal and the second release, each waiting
        # out a reconnect or two, one after another.)
        bound = SHUTDOWN + 5 + LEASE + 5 + REPLY_GRACE + 5
        print(f"recovered in {took:.1f}s; SIGTERM during a blackhole exited {code} after {stopped:.1f}s "
              f"(bound {bound:.0f}s)")
        assert code == 0 and stopped < bound, f"shutdown during a blackhole: exit {code} after {stopped:.1f}s"
        report = harness.check("db-half-open", within=60)
        no_database_casualties(report, harness)
