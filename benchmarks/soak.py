"""Soak: the chaos suite's fault loop against one database for a while; prints its counters.

    python benchmarks/soak.py --database postgresql://postgres@127.0.0.1:5432/test --duration 600

Two supervisors serve a fresh table while a steady stream of tasks is submitted (every
fifth batch in a transaction that is rolled back) and, every ``--fault-every`` seconds, one
process fault is picked at random: SIGKILL or SIGSEGV of a worker, SIGSTOP of a worker
shorter or longer than the lease, SIGKILL of a supervisor (a new one takes its place),
SIGSTOP of a supervisor past the lease, or a task that exits, segfaults or exhausts memory
in its worker. ``--faults-module M`` adds the callables in ``M.FAULTS`` (each takes the
`ChaosHarness`; database faults from tests/chaos plug in here, the soak owns no server).

On PostgreSQL and MariaDB one more fault ends, from the server, every session the soak's
processes hold (found by their client ports, so other users of the database are untouched).

A third supervisor, the witness, is never faulted itself (only the database faults reach it):
its footprint at the start and the end of the faults is the figure for growth. Every
supervisor runs its metrics sidecar on a port of its own. Printed at both moments (``start_``,
``end_``): resident memory and open file descriptors of the witness's supervisor, workers and
sidecar, and the connections every soak process holds (TCP sockets to the database port, and
the server's own count of sessions from those ports).

At the end every task must reach a final state, and the invariants of
``tests/chaos/harness.py`` are checked; the counters print as ``name value unit`` lines, then
each broken invariant on stderr (exit status 1). Not run in CI.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from common import emit, parser

from gta_core.db.connect import open_database
from tests.chaos.harness import ChaosHarness, InvariantError, client_ports, new_table
from tests.support.helpers import SupervisorProcess, children, cmdline
from tests.support.servers import free_port

Fault = Callable[[ChaosHarness], None]
WITNESS: list[int] = []  # the witness supervisor's pid: no process fault targets it


def start_supervisor(harness: ChaosHarness) -> SupervisorProcess:
    """A supervisor with its metrics sidecar on a free port (two cannot share one)."""
    return harness.supervisor(extra_env={"GTA_METRICS": "on", "GTA_METRICS_BIND": f"127.0.0.1:{free_port()}"})


def targets(harness: ChaosHarness) -> list[SupervisorProcess]:
    return [process for process in harness.live_supervisors() if process.pid not in WITNESS]


def target_worker(harness: ChaosHarness) -> int | None:
    pids = [pid for process in targets(harness) for pid in process.worker_pids()]
    return random.choice(pids) if pids else None


def kill_worker(harness: ChaosHarness) -> None:
    pid = target_worker(harness)
    if pid is not None:
        harness.kill(pid)


def segfault_worker(harness: ChaosHarness) -> None:
    pid = target_worker(harness)
    if pid is not None:
        harness.send(pid, signal.SIGSEGV)


def short_stop_worker(harness: ChaosHarness) -> None:
    pid = target_worker(harness)
    if pid is not None:
        harness.pause(pid, harness.lease_timeout / 3)


def long_stop_worker(harness: ChaosHarness) -> None:
    pid = target_worker(harness)
    if pid is not None:
        harness.pause(pid, harness.lease_timeout + 1.5)


def kill_supervisor(harness: ChaosHarness) -> None:
    live = targets(harness)
    if live:
        harness.kill_supervisor(random.choice(live))
    start_supervisor(harness)


def stop_supervisor(harness: ChaosHarness) -> None:
    live = targets(harness)
    if live:
        harness.pause(random.choice(live).pid, harness.lease_timeout + 1.0, kind="sigstop-supervisor")


def doomed_task(harness: ChaosHarness) -> None:
    key, args = random.choice([("chaos_exit", {}), ("chaos_segfault", {}), ("chaos_memory", {}),
                               ("chaos_memory", {"kill": True})])
    harness.faults.record(f"task-{key}", 0)  # pid 0: no process is silenced by it
    harness.submit(key, [args], max_attempts=2)


def end_sessions(harness: ChaosHarness) -> None:
    """End, from the server, every session of the soak's processes (PostgreSQL, MariaDB)."""
    ports = soak_client_ports(harness)
    if not ports or harness.backend == "sqlite":
        return
    admin = open_database(harness.db_url)
    try:
        with harness.faults.window("end-sessions"):
            for session in server_sessions(admin, harness.backend, ports):
                with contextlib.suppress(Exception):  # it may have ended by itself meanwhile
                    admin.execute_sql(f"SELECT pg_terminate_backend({session})"
                                      if harness.backend.startswith("postgres") else f"KILL {session}")
    finally:
        admin.close()


FAULTS: list[Fault] = [kill_worker, segfault_worker, short_stop_worker, long_stop_worker, kill_supervisor,
                       stop_supervisor, doomed_task, end_sessions]


# -- the footprint ---------------------------------------------------------------------------
def database_port(harness: ChaosHarness) -> int:
    defaults = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "mariadb": 3306}
    return urlparse(harness.db_url).port or defaults.get(harness.backend, 0)


def soak_pids(harness: ChaosHarness) -> list[int]:
    return [pid for process in harness.live_supervisors() for pid in (process.pid, *children(process.pid))]


def soak_client_ports(harness: ChaosHarness) -> set[int]:
    """Local ports of the soak processes' TCP connections to the database."""
    return client_ports(soak_pids(harness), database_port(harness))


def server_sessions(admin: object, backend: str, ports: set[int]) -> list[int]:
    """The server's session ids of connections from ``ports`` to this database."""
    if backend.startswith("postgres"):
        rows = admin.execute_sql(  # type: ignore[attr-defined]
            "SELECT pid, client_port FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()").fetchall()
    else:
        rows = admin.execute_sql(  # type: ignore[attr-defined]
            "SELECT id, SUBSTRING_INDEX(host, ':', -1) FROM information_schema.processlist "
            "WHERE db = DATABASE() AND id <> CONNECTION_ID()").fetchall()
    return [int(session) for session, port in rows if port is not None and str(port).isdigit()
            and int(port) in ports]


def status_field(pid: int, field: str) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return 0


def footprint(harness: ChaosHarness, witness: SupervisorProcess, when: str) -> None:
    """Memory and descriptors of the witness tree, connections of every soak process."""
    roles: dict[str, list[int]] = {"supervisor": [witness.pid], "workers": [], "sidecar": []}
    for pid in children(witness.pid):
        line = cmdline(pid)
        if "gta_core.metrics.sidecar" in line:
            roles["sidecar"].append(pid)
        elif "spawn_main" in line:
            roles["workers"].append(pid)
    for role, pids in roles.items():
        rss = sum(status_field(pid, "VmRSS") for pid in pids) / 1024
        emit(f"{when}_{role}_rss", rss, f"MiB ({len(pids)} processes)")
        emit(f"{when}_{role}_fds", sum(open_fds(pid) for pid in pids), "fds")
    ports = soak_client_ports(harness)
    emit(f"{when}_tcp_connections", len(ports), f"sockets ({len(harness.live_supervisors())} supervisor trees)")
    if harness.backend != "sqlite":
        admin = open_database(harness.db_url)
        try:
            emit(f"{when}_server_sessions", len(server_sessions(admin, harness.backend, ports)), "sessions")
        finally:
            admin.close()


WARM_UP = 20.0


def soak(database: str, duration: float, fault_every: float, rate: float, faults: list[Fault]) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="gta-soak-"))  # kept: its ledger and fault log explain a violation
    print(f"ledger, fault log and supervisor logs in {tmp}", file=sys.stderr)
    harness = ChaosHarness(database, new_table(), tmp, lease_timeout=3.0)
    try:
        witness = start_supervisor(harness)
        WITNESS.append(witness.pid)
        start_supervisor(harness)
        start_supervisor(harness)
        deadline = time.monotonic() + duration
        with harness.stream("chaos_work", {"seconds": 0.05}, batch=2, every=2 / rate):
            time.sleep(min(WARM_UP, duration))  # imports done, pools and prepared statements in place
            footprint(harness, witness, "start")
            while time.monotonic() < deadline:
                time.sleep(min(fault_every, max(0.0, deadline - time.monotonic())))
                if time.monotonic() < deadline:
                    random.choice(faults)(harness)
            time.sleep(WARM_UP)  # the last fault's reconnects and restarts settle
            footprint(harness, witness, "end")
        try:
            report = harness.check("soak", within=300)
            violations: list[str] = []
        except InvariantError as exc:
            assert harness.last_report is not None
            report, violations = harness.last_report, str(exc).splitlines()[1:]
        for name, value, unit in report.figures():
            emit(name, value, unit)
        emit("submit_errors", harness.submit_errors, "submits")
        for line in violations:
            print(line, file=sys.stderr)
        return 1 if violations else 0
    finally:
        harness.close(drop=True)


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=600.0, help="seconds of faults (default 600)")
    p.add_argument("--fault-every", type=float, default=3.0, help="seconds between faults (default 3)")
    p.add_argument("--rate", type=float, default=8.0, help="tasks submitted per second (default 8)")
    p.add_argument("--faults-module", help="module whose FAULTS list adds faults (e.g. database faults)")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop the supervisors, drop the table
    faults = list(FAULTS)
    if args.faults_module:
        faults += importlib.import_module(args.faults_module).FAULTS
    return soak(args.database, args.duration, args.fault_every, args.rate, faults)


if __name__ == "__main__":
    sys.exit(main())
