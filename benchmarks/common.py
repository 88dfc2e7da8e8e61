"""Shared plumbing for the benchmark scripts: a fresh table, a supervisor process, output lines."""
from __future__ import annotations

import argparse
import compileall
import contextlib
import functools
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import gta_core
from gta_core import runtime as runtime_module
from gta_core.runtime import Runtime
from gta_core.store.rows import parse_timestamp
from gta_core.store.task_store import TaskStore

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the scripts run as files; workers import benchmarks.bench_tasks
    sys.path.insert(0, str(ROOT))


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--database", default="sqlite:///bench.db", help="database URL (default sqlite:///bench.db)")
    return p


class Failed(Exception):
    """A benchmark that could not produce a trustworthy figure (lost, duplicated or missing tasks)."""


def emit(name: str, value: float, unit: str) -> None:
    """One figure, as ``name value unit``."""
    print(f"{name} {value:.6g} {unit}", flush=True)


@contextlib.contextmanager
def fresh_table(database: str, plugins: str = "benchmarks.bench_tasks", **settings: object) -> Iterator[Runtime]:
    """Configure this process (and the supervisors it starts) for a new, migrated table with the
    handlers of ``plugins``; drop it afterwards."""
    table = f"gta_bench_{secrets.token_hex(3)}"
    os.environ.update(GTA_DATABASE_URL=database, GTA_TABLE=table, GTA_PLUGINS=plugins,
                      PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    runtime = runtime_module.configure(**settings)
    runtime.store.migrate()
    try:
        yield runtime
    finally:
        runtime_module.reset()
        cleanup = Runtime(gta_core.load_settings({"database_url": database, "table": table}))
        cleanup.store.drop()


@functools.cache
def compile_bytecode() -> None:
    """Write the bytecode of GTA's modules, as installing a release does.

    ``pip install`` compiles every module of a wheel (the peers' included); an editable install
    (``pip install -e .``) leaves it to the first import, and where ``PYTHONDONTWRITEBYTECODE``
    is set, as on this project's machines, no import ever writes it. Every supervisor, worker
    and sidecar then compiled GTA's 6,000 lines again: about 60 ms of a supervisor's start and
    40 ms of a worker's, a tenth of a 20,000-task drain, that no installed deployment pays.
    """
    for package in ("gta_core", "gta_plugins", "benchmarks"):
        compileall.compile_dir(ROOT / package, quiet=1)


@contextlib.contextmanager
def supervisor(*args: str) -> Iterator[subprocess.Popen[bytes]]:
    """A ``gta-supervisor`` process on the configured table; SIGTERM and wait on exit."""
    compile_bytecode()
    # a sidecar on any free port: another supervisor on the host may hold the default one
    process = subprocess.Popen([sys.executable, "-m", "gta_core.cli_supervisor", "--log-level", "WARNING",
                                "--metrics-bind", "127.0.0.1:0", *args],
                               env=os.environ.copy())
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_until(condition: object, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return False


def timed_drain(store: TaskStore, key: str, tasks: int, supervisor_args: list[str],
                steady: dict[str, float] | None = None, attempts: int = 1) -> float:
    """Tasks/s of `supervisor` draining the ``tasks`` pending rows of task ``key``, from its start
    to the last success; raises Failed unless each succeeded exactly once, at attempt ``attempts``.

    The end is the last ``finished_at`` (this host's clock, like the start), so the poll that
    notices the end can be cheap and infrequent: it never steals the measured system's CPU.
    Only rows of ``key`` count: plugins (monitor, cleanup) may add periodic tasks of their own.
    ``steady``, if given, receives the rate from the first lease to the last success.
    """
    db = store.db
    quoted = "`key`" if store.dialect == "mysql" else '"key"'
    where = f"FROM {store.table} WHERE {quoted} = '{key}'"
    unfinished = f"SELECT 1 {where} AND status IN ('pending', 'running') LIMIT 1"
    start = time.time()
    with supervisor(*supervisor_args):
        done = wait_until(lambda: db.execute_sql(unfinished).fetchone() is None, timeout=600, interval=0.05)
    rows = db.execute_sql(f"SELECT status, attempts, COUNT(*) {where} GROUP BY status, attempts").fetchall()
    if not done or [tuple(row) for row in rows] != [("succeeded", attempts, tasks)]:
        raise Failed(f"{key} (status, attempts, count)={rows}")
    first, last = (parse_timestamp(value) for value in
                   db.execute_sql(f"SELECT MIN(started_at), MAX(finished_at) {where}").fetchone())
    assert first and last
    if steady is not None:
        steady["rate"] = tasks / max((last - first).total_seconds(), 1e-6)
    return tasks / (last.timestamp() - start)
