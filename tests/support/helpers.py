"""Helpers for tests that run real supervisor processes."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from gta_core.runtime import Runtime, configure

T = TypeVar("T")
WATCHDOG = 60.0  # no single wait in the suite may take longer than this


def wait_for(condition: Callable[[], T], timeout: float = WATCHDOG, what: str = "condition",
             interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# A process may exit between any two steps of reading its /proc files: the open then fails
# with FileNotFoundError, or the read of a file opened just before with ProcessLookupError
# (ESRCH). Both are OSError, and both mean "gone".
def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(part) for part in handle.read().split()]
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    """Children, grandchildren and so on (a supervisor's workers are its fork server's children)."""
    found = []
    for child in children(pid):
        found += [child, *descendants(child)]
    return found


def comm(pid: int) -> str:
    """The process's name (``/proc/PID/comm``): ``gta-worker`` for a worker."""
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def is_worker(pid: int) -> bool:
    """A worker process: named ``gta-worker``, or (releases before the fork server, which the
    rolling-upgrade tests run) a spawned ``spawn_main`` child."""
    return comm(pid) == "gta-worker" or "spawn_main" in cmdline(pid)


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def is_alive(pid: int) -> bool:
    """True for a live, non-zombie process."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@dataclasses.dataclass
class SupervisorProcess:
    """A ``gta-supervisor`` child process with its output captured to a file."""

    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def worker_pids(self) -> list[int]:
        return [pid for pid in descendants(self.pid) if is_worker(pid)]

    def wait_workers(self, count: int, timeout: float = WATCHDOG) -> list[int]:
        def ready() -> list[int] | None:
            pids = self.worker_pids()
            return pids if len(pids) == count else None
        return wait_for(ready, timeout, f"{count} worker processes")

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait(self, timeout: float = WATCHDOG) -> int:
        return self.popen.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill_tree(self) -> None:
        pids = [self.pid, *descendants(self.pid)]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass


@dataclasses.dataclass
class Env:
    runtime: Runtime
    table: str
    db_url: str
    ledger: Path
    tmp_path: Path
    processes: list[SupervisorProcess] = dataclasses.field(default_factory=list)

    @property
    def store(self) -> Any:
        return self.runtime.store

    def with_plugins(self, monkeypatch: Any, plugins: str) -> Env:
        """This env with ``plugins`` (``GTA_PLUGINS``) loaded here and in every supervisor started
        later (``monkeypatch`` undoes the variable after the test)."""
        monkeypatch.setenv("GTA_PLUGINS", plugins)
        self.runtime.db.close()
        self.runtime = configure()
        return self

    def supervisor(self, workers: int = 2, *args: str, extra_env: dict[str, str] | None = None,
                   wait_ready: bool = True, prefix: Sequence[str] = (),
                   command: Sequence[str] = (sys.executable, "-m", "gta_core.cli_supervisor"),
                   cwd: Path | None = None) -> SupervisorProcess:
        """Start ``gta-supervisor --workers N`` on this env's table (configured by environment);
        ``prefix`` runs it through a command that execs it (``ip netns exec NAME``: same pid), and
        ``command`` is how it is started (the ``gta-supervisor`` script, for ``opentelemetry-instrument``),
        ``cwd`` its working directory (None: this process's)."""
        index = len(self.processes)
        log_path = self.tmp_path / f"supervisor-{index}.log"
        environ = {**os.environ, **(extra_env or {})}
        with open(log_path, "wb") as log_file:
            popen = subprocess.Popen(
                [*prefix, *command, "--workers", str(workers), *args],
                stdout=log_file, stderr=subprocess.STDOUT, env=environ, start_new_session=True, cwd=cwd,
            )
        process = SupervisorProcess(popen, log_path)
        self.processes.append(process)
        if wait_ready:
            process.wait_workers(workers)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            if process.popen.poll() is None:
                process.kill_tree()
            else:
                for pid in descendants(process.pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

    def ledger_entries(self) -> list[dict[str, Any]]:
        with open(self.ledger) as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def runs_by_task(self, phase: str = "run") -> dict[int, int]:
        counts: dict[int, int] = {}
        for entry in self.ledger_entries():
            if entry["phase"] == phase:
                counts[entry["id"]] = counts.get(entry["id"], 0) + 1
        return counts

    def set_columns(self, task_id: int, **columns: object) -> None:
        """Write columns of a row directly (a test's shortcut to a state)."""
        assignments = ", ".join(f"{self.store._d.q(name)} = ?" for name in columns)
        self.runtime.db.execute_sql(self.store._d.fix(f"UPDATE {self.table} SET {assignments} WHERE id = ?"),
                                    (*columns.values(), task_id))

    def statuses(self, ids: Sequence[int]) -> dict[int, str]:
        return self.store.statuses(list(ids))

    def wait_final(self, ids: Sequence[int], timeout: float = WATCHDOG) -> dict[int, str]:
        """Wait until every task is succeeded, failed or cancelled; their statuses."""
        final = {"succeeded", "failed", "cancelled"}

        def settled() -> dict[int, str] | None:
            statuses = self.statuses(ids)
            return statuses if len(statuses) == len(ids) and set(statuses.values()) <= final else None
        return wait_for(settled, timeout, f"{len(ids)} tasks to reach a final state")


def wait_log(process: SupervisorProcess, text: str, count: int = 1, timeout: float = WATCHDOG) -> str:
    """Wait until ``text`` appears ``count`` times in a supervisor's log (workers log there too)."""
    def seen() -> str | None:
        log = process.log()
        return log if log.count(text) >= count else None
    return wait_for(seen, timeout, f"{count} x {text!r} in the log of supervisor {process.pid}", interval=0.1)


def wait_gone(pids: Sequence[int], timeout: float = WATCHDOG) -> None:
    """Wait until none of ``pids`` is a live (non-zombie) process."""
    wait_for(lambda: not [pid for pid in pids if is_alive(pid)], timeout,
             f"processes {list(pids)} to exit", interval=0.1)
