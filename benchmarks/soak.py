"""Soak: the chaos suite's fault loop against one database for a while; prints its counters.

    python benchmarks/soak.py --database postgresql://postgres@127.0.0.1:5432/test --duration 600

Two supervisors serve a fresh table while a steady stream of tasks is submitted (every
fifth batch in a transaction that is rolled back) and, every ``--fault-every`` seconds, one
process fault is picked at random: SIGKILL or SIGSEGV of a worker, SIGSTOP of a worker
shorter or longer than the lease, SIGKILL of a supervisor (a new one takes its place),
SIGSTOP of a supervisor past the lease, or a task that exits, segfaults or exhausts memory
in its worker. ``--faults-module M`` adds the callables in ``M.FAULTS`` (each takes the
`ChaosHarness`; database faults from tests/chaos plug in here, the soak owns no server).

At the end every task must reach a final state, and the invariants of
``tests/chaos/harness.py`` are checked; the counters print as ``name value unit`` lines, then
each broken invariant on stderr (exit status 1). Not run in CI.
"""
from __future__ import annotations

import importlib
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import emit, parser

from tests.chaos.harness import ChaosHarness, InvariantError, new_table

Fault = Callable[[ChaosHarness], None]


def kill_worker(harness: ChaosHarness) -> None:
    pid = harness.random_worker()
    if pid is not None:
        harness.kill(pid)


def segfault_worker(harness: ChaosHarness) -> None:
    pid = harness.random_worker()
    if pid is not None:
        harness.send(pid, signal.SIGSEGV)


def short_stop_worker(harness: ChaosHarness) -> None:
    pid = harness.random_worker()
    if pid is not None:
        harness.pause(pid, harness.lease_timeout / 3)


def long_stop_worker(harness: ChaosHarness) -> None:
    pid = harness.random_worker()
    if pid is not None:
        harness.pause(pid, harness.lease_timeout + 1.5)


def kill_supervisor(harness: ChaosHarness) -> None:
    live = harness.live_supervisors()
    if live:
        harness.kill_supervisor(random.choice(live))
    harness.supervisor()


def stop_supervisor(harness: ChaosHarness) -> None:
    live = harness.live_supervisors()
    if live:
        harness.pause(random.choice(live).pid, harness.lease_timeout + 1.0, kind="sigstop-supervisor")


def doomed_task(harness: ChaosHarness) -> None:
    key, args = random.choice([("chaos_exit", {}), ("chaos_segfault", {}), ("chaos_memory", {}),
                               ("chaos_memory", {"kill": True})])
    harness.faults.record(f"task-{key}", 0)  # pid 0: no process is silenced by it
    harness.submit(key, [args], max_attempts=2)


FAULTS: list[Fault] = [kill_worker, segfault_worker, short_stop_worker, long_stop_worker, kill_supervisor,
                       stop_supervisor, doomed_task]


def soak(database: str, duration: float, fault_every: float, rate: float, faults: list[Fault]) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="gta-soak-"))  # kept: its ledger and fault log explain a violation
    print(f"ledger, fault log and supervisor logs in {tmp}", file=sys.stderr)
    harness = ChaosHarness(database, new_table(), tmp, lease_timeout=3.0)
    try:
        harness.supervisor()
        harness.supervisor()
        deadline = time.monotonic() + duration
        with harness.stream("chaos_work", {"seconds": 0.05}, batch=2, every=2 / rate):
            while time.monotonic() < deadline:
                time.sleep(min(fault_every, max(0.0, deadline - time.monotonic())))
                if time.monotonic() < deadline:
                    random.choice(faults)(harness)
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
