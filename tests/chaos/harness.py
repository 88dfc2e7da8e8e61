"""The chaos harness: real supervisors, a fault log, a ledger, and the invariant checker.

Usage in a test (the ``chaos`` fixture of ``tests/chaos/conftest.py`` builds one per backend)::

    def test_something(chaos):
        ids = chaos.submit("chaos_work", [{"seconds": 0.2}] * 30)   # committed, tracked
        chaos.submit_rolled_back("chaos_work", [{}] * 3)             # must never run or exist
        sup = chaos.supervisor()                                     # gta-supervisor, chaos settings
        chaos.pause(chaos.worker_pids()[0], seconds=5)               # SIGSTOP..SIGCONT, logged
        chaos.kill(chaos.worker_pids()[0])                           # SIGKILL, logged
        with chaos.faults.window("db-outage"):                       # any fault of your own
            ...                                                      # (pid=None: hits every process)
        report = chaos.check("my-scenario", ids)                     # raises InvariantError

Anywhere else (a private server, the soak script)::

    harness = ChaosHarness(db_url, table, tmp_path, backend="postgres", lease_timeout=3)
    ...; harness.check(...); harness.close(drop=True)

The ledger: every chaos handler (``tests/chaos/chaos_tasks.py``) appends ``start`` and ``end``
lines (task id, attempt, lease owner, pid, time) to a JSONL file with single ``O_APPEND``
writes. The issue asks for a ledger written "through a separate connection": a file is the
separate channel that no database fault can break, so executions are counted even while
the database under test is down or being restarted.

The fault log: every fault the harness injects (kind, pid or None for the whole database,
t_start, t_end) is recorded, and tests recording their own faults use the same `FaultLog`.
The checker uses it to tell allowed duplicates (the first holder really could not heartbeat
for a lease period) from broken ones, and to excuse overdue ``running`` rows while no
supervisor could rescue them.

A sampler thread, on a connection of its own, reads the table every ``sample_interval``
(overdue running rows, final rows that change afterwards), watches the supervisors'
children (workers, zombies) and counts each supervisor tree's TCP connections to the
database port from ``/proc`` (the engine sets no application_name; the socket owner is exact
and counts only this harness's processes).
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import random
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import gta_core
from gta_core import runtime as runtime_module
from gta_core.config import Settings, load_settings
from gta_core.db.connect import drop_connection, open_database
from gta_core.runtime import Runtime
from gta_core.store.sql.statements import FINAL_STATUSES
from gta_core.store.task_store import TaskStore, parse_timestamp

from ..support.helpers import Env, SupervisorProcess, children, descendants, is_alive, is_worker, wait_for
from ..support.paths import child_pythonpath

PLUGIN = "tests.chaos.chaos_tasks"
#: every scenario's counter line, printed by the terminal summary of tests/chaos/conftest.py
REPORTS: list[str] = []
#: the ledger's clock (the host's) and the database's may differ this much (same host, or NTP)
CLOCK_SLACK = 0.05
#: faults that end a process at once (SIGTERM does not: the worker drains first)
KILLS = ("sigkill", "sigsegv", "sigabrt")


class InvariantError(AssertionError):
    """An invariant broke; the message names the tasks."""


# -- the fault log ------------------------------------------------------------------------
@dataclasses.dataclass
class Fault:
    """One injected fault: ``pid`` None means it hits every process (a database outage)."""

    kind: str
    pid: int | None
    t_start: float
    t_end: float | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def overlap(self, start: float, end: float) -> float:
        """Seconds of this fault inside [start, end] (an open fault lasts until now)."""
        stop = self.t_end if self.t_end is not None else time.time()
        return max(0.0, min(stop, end) - max(self.t_start, start))


class FaultLog:
    """Every fault injected in a scenario, in memory and as JSONL (for a failing test's reader)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.faults: list[Fault] = []
        self._lock = threading.Lock()

    def begin(self, kind: str, pid: int | None = None, **info: Any) -> Fault:
        fault = Fault(kind, pid, time.time(), None, info)
        with self._lock:
            self.faults.append(fault)
        return fault

    def end(self, fault: Fault) -> None:
        fault.t_end = time.time()
        with self._lock, open(self.path, "a") as handle:
            handle.write(json.dumps(dataclasses.asdict(fault)) + "\n")

    def record(self, kind: str, pid: int | None = None, **info: Any) -> Fault:
        """An instantaneous fault (a kill)."""
        fault = self.begin(kind, pid, **info)
        self.end(fault)
        return fault

    @contextlib.contextmanager
    def window(self, kind: str, pid: int | None = None, **info: Any) -> Iterator[Fault]:
        """A fault lasting as long as the ``with`` block (an outage, a stop)."""
        fault = self.begin(kind, pid, **info)
        try:
            yield fault
        finally:
            self.end(fault)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for fault in self.faults:
            counts[fault.kind] = counts.get(fault.kind, 0) + 1
        return counts

    def silencing(self, pid: int, start: float, end: float, everyone: Sequence[str] = ()) -> Fault | None:
        """The fault that kept ``pid`` from the database longest within [start, end]: one on
        that pid, one on every process (pid None), or one of the kinds in ``everyone``."""
        found = [f for f in self.faults if f.pid in (pid, None) or f.kind in everyone]
        return max(found, key=lambda f: f.overlap(start, end), default=None)


# -- the ledger ---------------------------------------------------------------------------
@dataclasses.dataclass
class Execution:
    """One run of a handler: from its ``start`` line to its ``end`` line or its process's death."""

    task_id: int
    attempt: int
    owner: str
    pid: int
    tag: str
    start: float
    end: float | None = None
    outcome: str | None = None  # ok, exit, segfault, memory-error, oom-kill; None: never said

    @property
    def label(self) -> str:
        return f"attempt {self.attempt} by {self.owner} (pid {self.pid})"


def read_ledger(path: Path) -> list[Execution]:
    executions: dict[tuple[int, str, int], Execution] = {}
    with open(path) as handle:
        for line in handle:
            if not line.strip():
                continue
            entry = json.loads(line)
            key = (entry["id"], entry["owner"], entry["attempt"])
            if entry["event"] == "start":
                executions[key] = Execution(entry["id"], entry["attempt"], entry["owner"], entry["pid"],
                                            entry["tag"], entry["t"])
            elif key in executions:
                executions[key].end, executions[key].outcome = entry["t"], entry.get("outcome")
    return sorted(executions.values(), key=lambda e: (e.task_id, e.start))


# -- what the sampler sees ----------------------------------------------------------------
@dataclasses.dataclass
class Overdue:
    """A ``running`` row seen past its lease by more than the rescue bound."""

    task_id: int
    owner: str
    expired: float  # local clock
    seen: float


def tcp_connections(pids: Sequence[int], port: int) -> int:
    """TCP sockets held by ``pids`` whose peer is ``port`` (connections to the database)."""
    return len(client_ports(pids, port))


def client_ports(pids: Sequence[int], port: int) -> set[int]:
    """The local ports of the TCP sockets ``pids`` hold whose peer is ``port``: the
    ``client_port`` the database server sees for each of their sessions."""
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as handle:
            for line in list(handle)[1:]:
                fields = line.split()
                if fields[9] in inodes and int(fields[2].rsplit(":", 1)[1], 16) == port:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def process_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


@dataclasses.dataclass
class Report:
    """A scenario's counters and the invariants it broke."""

    scenario: str
    backend: str
    tasks: int = 0
    executions: int = 0
    duplicates: int = 0
    duplicate_reasons: dict[str, int] = dataclasses.field(default_factory=dict)
    #: handler runs that returned but whose success is not the row's: refused by the fence (a
    #: newer holder existed) or never written (the worker died first)
    unrecorded_completions: int = 0
    lost: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    faults: dict[str, int] = dataclasses.field(default_factory=dict)
    max_overdue: float = 0.0  # longest a running row was seen past its lease (s)
    max_connections: int = 0  # most database connections of one supervisor tree
    connection_bound: int = 0
    worker_restarts: int = 0
    samples: int = 0
    seconds: float = 0.0
    violations: list[str] = dataclasses.field(default_factory=list)

    def line(self) -> str:
        reasons = ",".join(f"{k}:{v}" for k, v in sorted(self.duplicate_reasons.items())) or "-"
        faults = ",".join(f"{k}:{v}" for k, v in sorted(self.faults.items())) or "-"
        connections = (f"{self.max_connections}/{self.connection_bound}" if self.connection_bound else "n/a")
        return (f"{self.scenario} {self.backend} tasks={self.tasks} executions={self.executions} "
                f"duplicates={self.duplicates} ({reasons}) unrecorded_completions={self.unrecorded_completions} "
                f"lost={self.lost} succeeded={self.succeeded} failed={self.failed} "
                f"faults={faults} max_overdue={self.max_overdue:.1f}s connections={connections} "
                f"worker_restarts={self.worker_restarts} violations={len(self.violations)} "
                f"seconds={self.seconds:.0f}")

    def figures(self) -> list[tuple[str, float, str]]:
        """(name, value, unit) for ``benchmarks.common.emit``."""
        figures = [("tasks", self.tasks, "tasks"), ("executions", self.executions, "executions"),
                   ("duplicates", self.duplicates, "executions"), ("unrecorded_completions",
                                                                    self.unrecorded_completions, "runs"),
                   ("lost", self.lost, "tasks"), ("succeeded", self.succeeded, "tasks"),
                   ("failed", self.failed, "tasks"), ("max_overdue", self.max_overdue, "s"),
                   ("max_connections", self.max_connections, "connections"),
                   ("worker_restarts", self.worker_restarts, "restarts"),
                   ("violations", len(self.violations), "violations")]
        figures += [(f"duplicates_{reason}", count, "executions") for reason, count in
                    sorted(self.duplicate_reasons.items())]
        figures += [(f"faults_{kind}", count, "faults") for kind, count in sorted(self.faults.items())]
        return figures


# -- the harness ----------------------------------------------------------------------------
class ChaosHarness:
    """One task table, the supervisors on it, the faults injected, and the checks at the end.

    ``lease_timeout`` is short so that rescues happen within a scenario; ``rescue_grace`` is
    the slack (a loaded 2-core machine) allowed on top of the rescue interval before an
    expired ``running`` row counts as overdue.
    """

    def __init__(self, db_url: str, table: str, tmp_path: Path, *, backend: str | None = None,
                 lease_timeout: float = 2.0, workers: int = 2, threads: int = 1, scan_interval: float = 0.5,
                 shutdown_timeout: float = 3.0, rescue_grace: float = 2.0, sample_interval: float = 0.25,
                 extra_env: dict[str, str] | None = None) -> None:
        self.db_url, self.table, self.tmp_path = db_url, table, tmp_path
        self.backend = backend or urlparse(db_url).scheme
        self.ledger_path = tmp_path / f"{table}-ledger.jsonl"
        self.ledger_path.touch()
        self.faults = FaultLog(tmp_path / f"{table}-faults.jsonl")
        self.environ = {
            "GTA_DATABASE_URL": db_url, "GTA_TABLE": table, "GTA_PLUGINS": PLUGIN,
            "GTA_CHAOS_LEDGER": str(self.ledger_path), "GTA_WORKERS": str(workers), "GTA_THREADS": str(threads),
            "GTA_LEASE_TIMEOUT": str(lease_timeout), "GTA_SCAN_INTERVAL": str(scan_interval),
            "GTA_SHUTDOWN_TIMEOUT": str(shutdown_timeout), "GTA_RETRY_BASE": "0.1", "GTA_RETRY_CAP": "0.5",
            "GTA_METRICS": "off", "GTA_DISABLE_PLUGINS": "monitor,cleanup",
            "PYTHONPATH": child_pythonpath(),
            **(extra_env or {}),
        }
        self.settings: Settings = load_settings(environ=self.environ)
        self.runtime = runtime_module.configure(self.settings)
        self.runtime.store.migrate()
        self.env = Env(runtime=self.runtime, table=table, db_url=db_url, ledger=self.ledger_path, tmp_path=tmp_path)
        self.rescue_grace, self.sample_interval = rescue_grace, sample_interval
        self.committed: list[int] = []
        self.rolled_back: list[int] = []
        self.rolled_back_tags: set[str] = set()
        self.uncertain_tags: set[str] = set()  # submits whose commit may or may not have happened
        self._batch = 0
        self.submit_errors = 0
        # sampler state
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        self._ready: dict[int, float] = {}  # supervisor pid -> time its workers were all up
        self._sizes: dict[int, int] = {}  # supervisor pid -> its number of workers
        self._gone: dict[int, float] = {}  # supervisor or worker pid -> time it was first seen dead
        self._workers: dict[int, int] = {}  # worker pid -> its supervisor's pid
        self._zombie_since: dict[int, float] = {}
        self._final_rows: dict[int, tuple[Any, ...]] = {}
        self._overdue: list[Overdue] = []
        self._max_overdue = 0.0
        self._max_connections = 0
        self._rewritten: list[str] = []
        self._zombies: list[str] = []
        self.samples = 0
        self.started = time.time()
        self.last_report: Report | None = None

    # -- settings the checks need ----------------------------------------------------------
    @property
    def lease_timeout(self) -> float:
        return self.settings.lease_timeout

    @property
    def rescue_bound(self) -> float:
        """How long past its lease a ``running`` row may be seen while a supervisor is up."""
        return self.settings.rescue_interval + self.rescue_grace

    @property
    def connection_bound(self) -> int:
        """Connections one supervisor tree may hold: the supervisor's rescuer, janitor and
        listener loops (+1: its main thread at start and exit), and per worker its lease,
        heartbeat and completer threads plus one per handler thread."""
        if self.backend == "sqlite":
            return 0
        return 4 + self.settings.workers * (3 + self.settings.threads)

    # -- submitting ------------------------------------------------------------------------
    def _requests(self, key: str, args_list: Sequence[dict[str, Any]], tag: str,
                  options: dict[str, Any]) -> list[gta_core.TaskRequest]:
        return [gta_core.TaskRequest(key, {**args, "tag": tag}, **options) for args in args_list]

    def _next_tag(self, kind: str) -> str:
        self._batch += 1
        return f"{kind}{self._batch}"

    def submit(self, key: str, args_list: Sequence[dict[str, Any]], **options: Any) -> list[int]:
        """Submit in one committed transaction; the ids are tracked. A submit that raises is
        remembered as uncertain (its commit may have happened): its rows must still end final."""
        tag = self._next_tag("c")
        try:
            ids = gta_core.submit_many(gta_core.OWN_TRANSACTION, self._requests(key, args_list, tag, options))
        except Exception:
            self.uncertain_tags.add(tag)
            raise
        self.committed += ids
        return ids

    def submit_rolled_back(self, key: str, args_list: Sequence[dict[str, Any]]) -> list[int]:
        """Submit inside a transaction that is then rolled back: these must never run or exist."""
        tag = self._next_tag("r")
        self.rolled_back_tags.add(tag)
        db = self.runtime.db
        with db.atomic() as tx:
            ids = gta_core.submit_many(db, self._requests(key, args_list, tag, {}))
            tx.rollback()
        self.rolled_back += ids
        return ids

    @contextlib.contextmanager
    def stream(self, key: str, args: dict[str, Any], batch: int = 3, every: float = 0.2,
               rolled_back_every: int = 5) -> Iterator[None]:
        """Submit ``batch`` tasks every ``every`` seconds in a thread while the block runs (and a
        rolled-back batch every ``rolled_back_every`` batches). A submit the database refuses
        (an outage) is counted in ``submit_errors`` and the stream goes on."""
        done = threading.Event()

        def run() -> None:
            count = 0
            while not done.wait(every):
                count += 1
                try:
                    if rolled_back_every and count % rolled_back_every == 0:
                        self.submit_rolled_back(key, [args] * batch)
                    else:
                        self.submit(key, [args] * batch)
                except Exception:
                    self.submit_errors += 1
                    drop_connection(self.runtime.db)
        thread = threading.Thread(target=run, name="chaos-stream", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(30)

    def executions(self, task_id: int | None = None) -> list[Execution]:
        """The ledger so far (of one task)."""
        return [e for e in read_ledger(self.ledger_path) if task_id is None or e.task_id == task_id]

    def wait_started(self, task_id: int, count: int = 1, timeout: float = 60.0) -> Execution:
        """The ``count``-th execution of ``task_id``, once it has started."""
        def started() -> Execution | None:
            runs = self.executions(task_id)
            return runs[count - 1] if len(runs) >= count else None
        found = wait_for(started, timeout, f"execution {count} of task {task_id}")
        assert found is not None
        return found

    # -- processes ---------------------------------------------------------------------------
    def supervisor(self, workers: int | None = None, *args: str, extra_env: dict[str, str] | None = None,
                   wait_ready: bool = True, prefix: Sequence[str] = ()) -> SupervisorProcess:
        """Start a ``gta-supervisor`` with the harness's settings (and start sampling); ``prefix``:
        see `Env.supervisor`."""
        count = workers or self.settings.workers
        process = self.env.supervisor(count, *args, extra_env={**self.environ, **(extra_env or {})},
                                      wait_ready=wait_ready, prefix=prefix)
        self._sizes[process.pid] = count
        if wait_ready:
            self._ready[process.pid] = time.time()
        if self._sampler is None:
            self._sampler = threading.Thread(target=self._sample_loop, name="chaos-sampler", daemon=True)
            self._watcher = threading.Thread(target=self._watch_loop, name="chaos-watcher", daemon=True)
            self._sampler.start()
            self._watcher.start()
        return process

    def live_supervisors(self) -> list[SupervisorProcess]:
        return [process for process in self.env.processes if process.popen.poll() is None]

    def worker_pids(self) -> list[int]:
        return [pid for process in self.live_supervisors() for pid in process.worker_pids()]

    def random_worker(self) -> int | None:
        pids = self.worker_pids()
        return random.choice(pids) if pids else None

    def kill(self, pid: int, kind: str = "sigkill") -> Fault:
        """SIGKILL ``pid`` and log it."""
        fault = self.faults.record(kind, pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return fault

    def send(self, pid: int, signum: signal.Signals) -> Fault:
        """Send ``signum`` (SIGSEGV, SIGABRT, SIGTERM, ...) to ``pid`` and log it by the signal's name."""
        fault = self.faults.record(signum.name.lower(), pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        return fault

    def pause(self, pid: int, seconds: float, kind: str = "sigstop") -> Fault:
        """SIGSTOP ``pid`` for ``seconds``, then SIGCONT; the window is logged."""
        with self.faults.window(kind, pid) as fault:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                return fault
            try:
                time.sleep(seconds)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        return fault

    def kill_supervisor(self, process: SupervisorProcess) -> Fault:
        """SIGKILL a supervisor (its workers get SIGTERM from the kernel) and reap it."""
        fault = self.kill(process.pid, "sigkill-supervisor")
        process.popen.wait(30)
        return fault

    # -- sampling ------------------------------------------------------------------------------
    def _sample_loop(self) -> None:
        store = TaskStore(open_database(self.db_url, statement_timeout=10), self.table)
        while not self._stop.wait(self.sample_interval):
            try:
                self._sample_rows(store)
                self.samples += 1
            except Exception:  # the database may be down on purpose: sample again later
                drop_connection(store.db)
        with contextlib.suppress(Exception):
            store.db.close()

    def _watch_loop(self) -> None:
        """Processes are watched on a thread of their own, so that a slow table read never
        delays noticing a death (an execution without an ``end`` line ends there)."""
        port = urlparse(self.db_url).port or {"postgres": 5432, "mariadb": 3306}.get(self.backend, 0)
        while not self._stop.wait(0.05):
            with contextlib.suppress(OSError):  # a process may vanish while /proc is read
                self._watch_processes(port)

    def _watch_processes(self, port: int) -> None:
        now = time.time()
        for process in self.env.processes:
            if process.popen.poll() is not None:
                self._gone.setdefault(process.pid, now)
                continue
            tree = [process.pid]
            for pid in descendants(process.pid):
                state = process_state(pid)
                if state == "Z":
                    since = self._zombie_since.setdefault(pid, now)
                    if now - since > 5.0:
                        self._zombies.append(f"worker {pid} of supervisor {process.pid} a zombie for "
                                             f"{now - since:.0f}s")
                        self._zombie_since[pid] = float("inf")  # report once
                    continue
                if is_worker(pid):
                    self._workers.setdefault(pid, process.pid)
                tree.append(pid)
            if process.pid not in self._ready and len(tree) > self._sizes.get(process.pid, 0):
                self._ready[process.pid] = now
            if self.connection_bound:
                self._max_connections = max(self._max_connections, tcp_connections(tree, port))
        for pid in self._workers:
            if pid not in self._gone and not is_alive(pid):
                self._gone[pid] = now

    def _sample_rows(self, store: TaskStore) -> None:
        now_sql = store.sql.dialect.now
        rows = store.db.execute_sql(
            f"SELECT id, status, lease_owner, lease_expires_at, finished_at, attempts, {now_sql} "
            f"FROM {self.table}").fetchall()
        local = time.time()
        for task_id, status, owner, expires, finished, attempts, db_now in rows:
            if status in FINAL_STATUSES:
                snapshot = (status, owner, str(finished), attempts)
                first = self._final_rows.setdefault(task_id, snapshot)
                if first != snapshot:
                    self._rewritten.append(f"task {task_id}: final row {first} rewritten as {snapshot}")
                    self._final_rows[task_id] = snapshot
            elif status == "running" and expires is not None:
                late = (parse_timestamp(db_now) - parse_timestamp(expires)).total_seconds()  # type: ignore[operator]
                self._max_overdue = max(self._max_overdue, late)
                if late > self.rescue_bound:
                    self._overdue.append(Overdue(task_id, owner, local - late, local))

    def _rescuer_up(self, pid: int, start: float, end: float) -> bool:
        """Was supervisor ``pid`` able to rescue during all of [start, end]?"""
        ready = self._ready.get(pid)
        if ready is None or ready > start or self._gone.get(pid, float("inf")) < end:
            return False
        return not any(f.overlap(start, end) > 0 for f in self.faults.faults if f.pid in (pid, None))

    # -- the end of a scenario -------------------------------------------------------------------
    def wait_final(self, ids: Sequence[int], timeout: float) -> dict[int, str]:
        """Statuses once every id is final, or whatever they are after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                statuses = self.runtime.store.statuses(list(ids))
            except Exception:
                drop_connection(self.runtime.db)
                statuses = {}
            if len(statuses) == len(ids) and set(statuses.values()) <= set(FINAL_STATUSES):
                return statuses
            if time.monotonic() > deadline:
                return statuses
            time.sleep(0.2)

    def check(self, scenario: str, ids: Sequence[int] | None = None, within: float = 60.0,
              stop: bool = True) -> Report:
        """Wait up to ``within`` seconds for every committed task to be final, stop the
        supervisors (SIGTERM) unless ``stop`` is False, then check every invariant.

        Adds the counter line to `REPORTS` and raises `InvariantError` naming the tasks when
        an invariant broke. ``ids`` defaults to every task this harness committed.
        """
        ids = list(self.committed if ids is None else ids)
        report = Report(scenario, self.backend, tasks=len(ids))
        statuses = self.wait_final(ids, within)
        if stop:
            for process in self.live_supervisors():
                self._expect_workers(process, report)
            self._stop_supervisors(report)
        self._stop.set()
        for thread in (self._sampler, self._watcher):
            if thread is not None:
                thread.join(10)
        violations = report.violations
        lost = sorted(i for i in ids if statuses.get(i) not in FINAL_STATUSES)
        report.lost = len(lost)
        if lost:
            violations.append(f"{len(lost)} committed task(s) not final within {within:.0f}s: {lost[:20]} "
                              f"(statuses {[statuses.get(i) for i in lost[:20]]})")
        for status in FINAL_STATUSES:
            setattr(report, status, sum(1 for i in ids if statuses.get(i) == status))
        rows = self._rows()
        self._check_table(rows, violations)
        executions = read_ledger(self.ledger_path)
        report.executions = len(executions)
        self._check_executions(executions, rows, report)
        violations += self._rewritten + self._zombies
        for overdue in self._overdue:
            if any(self._rescuer_up(p.pid, overdue.expired, overdue.seen - self.rescue_bound)
                   for p in self.env.processes):
                violations.append(f"task {overdue.task_id}: running {overdue.seen - overdue.expired:.1f}s past "
                                  f"its lease (owner {overdue.owner}) while a supervisor was up; "
                                  f"bound {self.rescue_bound:.1f}s")
        report.max_overdue = self._max_overdue
        report.max_connections, report.connection_bound = self._max_connections, self.connection_bound
        if self.connection_bound and self._max_connections > self.connection_bound:
            violations.append(f"a supervisor tree held {self._max_connections} database connections, "
                              f"bound {self.connection_bound}")
        report.faults = self.faults.counts()
        report.worker_restarts = max(0, len(self._workers) - sum(self._sizes.values()))
        report.samples, report.seconds = self.samples, time.time() - self.started
        REPORTS.append(report.line())
        self.last_report = report
        if violations:
            raise InvariantError(f"{scenario} on {self.backend}: {len(violations)} invariant(s) broke:\n  "
                                 + "\n  ".join(violations[:40]) + f"\n{report.line()}\nledger: {self.ledger_path}")
        return report

    def _expect_workers(self, process: SupervisorProcess, report: Report) -> None:
        """A running supervisor has replaced every dead worker (no paused or stopped one)."""
        try:
            process.wait_workers(self._sizes[process.pid], timeout=30)
        except AssertionError:
            report.violations.append(f"supervisor {process.pid} did not get back to {self._sizes[process.pid]} "
                                     f"workers: {process.worker_pids()}")

    def _stop_supervisors(self, report: Report) -> None:
        """SIGTERM every supervisor; each must exit, and no worker, orphan or zombie remain."""
        live = self.live_supervisors()
        for process in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)  # never leave one stopped
                process.signal(signal.SIGTERM)
        for process in live:
            try:
                code = process.wait(self.settings.shutdown_timeout + 30)
                if code != 0:
                    report.violations.append(f"supervisor {process.pid} exited {code} on SIGTERM")
            except subprocess.TimeoutExpired:
                report.violations.append(f"supervisor {process.pid} did not stop on SIGTERM")
                process.kill_tree()
        try:
            wait_for(lambda: not [pid for pid in self._workers if is_alive(pid)], 30, "workers to exit")
        except AssertionError:
            leftover = [pid for pid in self._workers if is_alive(pid)]
            report.violations.append(f"worker processes {leftover} outlived their supervisors")
            for pid in leftover:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        zombies = [pid for pid in children(os.getpid()) if process_state(pid) == "Z"]
        if zombies:
            report.violations.append(f"zombie children of the test process: {zombies}")

    def _rows(self) -> dict[int, dict[str, Any]]:
        columns = "id, status, attempts, max_attempts, lease_owner, args, finished_at"
        db = self.runtime.db

        def read() -> tuple[list[Any]] | None:
            try:
                return (db.execute_sql(f"SELECT {columns} FROM {self.table}").fetchall(),)
            except Exception:  # the database may still be coming back
                drop_connection(db)
                return None
        answer = wait_for(read, 60, "the task table to answer")
        assert answer is not None
        (rows,) = answer
        names = columns.split(", ")
        return {row[0]: dict(zip(names, row, strict=True)) for row in rows}

    def _check_table(self, rows: dict[int, dict[str, Any]], violations: list[str]) -> None:
        """Nothing rolled back exists; every row is a committed task (or an uncertain submit)."""
        committed = set(self.committed)
        for task_id, row in rows.items():
            tag = json.loads(row["args"]).get("tag", "")
            if tag in self.rolled_back_tags:
                violations.append(f"task {task_id} of a rolled-back transaction exists ({row['status']})")
            elif task_id not in committed and tag not in self.uncertain_tags:
                violations.append(f"task {task_id} exists but was never committed by this harness")
            elif tag in self.uncertain_tags and row["status"] not in FINAL_STATUSES:
                violations.append(f"task {task_id} (uncertain submit) is {row['status']}, not final")
            if row["attempts"] > row["max_attempts"]:
                violations.append(f"task {task_id}: attempts {row['attempts']} > max_attempts {row['max_attempts']}")

    def _check_executions(self, executions: list[Execution], rows: dict[int, dict[str, Any]],
                          report: Report) -> None:
        violations = report.violations
        by_task: dict[int, list[Execution]] = {}
        for execution in executions:
            if execution.tag in self.rolled_back_tags:
                violations.append(f"task {execution.task_id} of a rolled-back transaction ran ({execution.label})")
            by_task.setdefault(execution.task_id, []).append(execution)
        threshold = self.lease_timeout - self.settings.heartbeat_interval - 0.5
        everyone = ("sigstop",) if self.backend == "sqlite" else ()  # a stopped SQLite writer blocks all
        for task_id, runs in by_task.items():
            row = rows.get(task_id)
            for earlier, later in itertools.pairwise(runs):
                if later.attempt <= earlier.attempt:
                    why = (" (it had completed, but its worker died before the success was written, and "
                           "the attempt was released uncounted)" if earlier.outcome == "ok" else "")
                    violations.append(f"task {task_id}: attempt {later.attempt} ({later.owner}) started after "
                                      f"{earlier.label}: attempts not monotonic{why}")
            if row is not None and runs[-1].attempt > row["max_attempts"]:
                violations.append(f"task {task_id}: ran attempt {runs[-1].attempt} > max {row['max_attempts']}")
            for index, later in enumerate(runs):
                for earlier in runs[:index]:
                    end = earlier.end if earlier.end is not None else self._death(earlier)
                    if end <= later.start:
                        continue
                    report.duplicates += 1
                    fault = self.faults.silencing(earlier.pid, earlier.start, later.start, everyone)
                    silent = fault.overlap(earlier.start, later.start) if fault else 0.0
                    if fault is None or silent < threshold:
                        report.duplicate_reasons["UNEXPLAINED"] = report.duplicate_reasons.get("UNEXPLAINED", 0) + 1
                        violations.append(f"task {task_id}: {later.label} started while {earlier.label} still ran, "
                                          f"and no fault silenced pid {earlier.pid} for {threshold:.1f}s "
                                          f"(longest: {silent:.1f}s {fault.kind if fault else ''})")
                    else:
                        report.duplicate_reasons[fault.kind] = report.duplicate_reasons.get(fault.kind, 0) + 1
            if row is None or row["status"] != "succeeded":
                continue
            # the accepted success must be the latest lease's: same owner, same attempt, and the
            # run had ended when the row was marked (a stale run's write would be earlier)
            finished = parse_timestamp(row["finished_at"])
            latest = [run for run in runs if run.owner == row["lease_owner"] and run.attempt == row["attempts"]]
            if not latest or latest[-1].outcome != "ok":
                violations.append(f"task {task_id}: succeeded under {row['lease_owner']} at attempt "
                                  f"{row['attempts']}, but the ledger has no completed run of that lease")
            elif finished is not None and latest[-1].end is not None and \
                    latest[-1].end > finished.timestamp() + CLOCK_SLACK:
                violations.append(f"task {task_id}: marked succeeded {latest[-1].end - finished.timestamp():.2f}s "
                                  f"before its latest run ({latest[-1].label}) ended: a stale run's success was "
                                  "accepted over the newer lease")
            report.unrecorded_completions += sum(1 for run in runs if run.outcome == "ok" and run not in latest[-1:])

    def _death(self, execution: Execution) -> float:
        """When a run without an ``end`` line stopped: its process's kill in the fault log, or
        the moment the watcher saw the process gone (infinity while it lives)."""
        kills = [f.t_start for f in self.faults.faults
                 if f.pid == execution.pid and f.kind in KILLS and f.t_start >= execution.start]
        return min([*kills, self._gone.get(execution.pid, float("inf"))])

    def close(self, drop: bool = True) -> None:
        """Kill whatever still runs, stop sampling, and drop the table."""
        self._stop.set()
        for process in self.env.processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)
        self.env.stop_all()
        for pid in self._workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
        for thread in (self._sampler, self._watcher):
            if thread is not None:
                thread.join(10)
        runtime_module.reset()
        if drop:
            cleanup = Runtime(load_settings({"database_url": self.db_url, "table": self.table}, environ={}))
            cleanup.store.drop()
            cleanup.db.close()


def new_table() -> str:
    return f"gta_chaos_{secrets.token_hex(4)}"
