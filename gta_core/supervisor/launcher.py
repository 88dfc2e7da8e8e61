"""How the supervisor starts worker processes: forked from a server that has imported them.

Three ways were weighed (docs/architecture.md, "Starting workers"):

- *spawn*, a fresh interpreter per worker (what GTA did until 0.1): safe, but every worker pays
  the interpreter and every import again, some 200 ms of a two-worker start on two cores;
- *fork* of the supervisor itself (gunicorn's arbiter, Celery's prefork pool): the cheapest,
  but the supervisor runs threads (its services, the metrics host) and has had connections
  open, and a fork of a multi-threaded process can inherit a lock another thread held
  (logging's, the import lock, a driver's) and hang; CPython 3.12 warns about it;
- a *fork server* (multiprocess's ``forkserver`` context, CPython 3.14's default on Linux): a
  single-threaded process, started at once and beside the supervisor's own checks, imports
  the worker's code (GTA's modules, peewee with the one driver the database needs) and forks
  each worker from that state. No thread, no connection and no user code crosses a fork: the
  handler modules are imported by each worker after it, as with spawn.

The fork server's life is tied to the supervisor's by a pipe (it exits when the supervisor's
end closes), and it ignores SIGTERM (`gta_core.worker.preload`). A worker takes the
supervisor's environment as it is when the worker starts (the supervisor passes it), not as
it was when the server started, as a spawned worker would.
"""
from __future__ import annotations

import os
import sys
from typing import Any

import multiprocess
from multiprocess import forkserver

from ..config import Settings
from ..db import drivers
from ..metrics.multiproc import ENV as METRICS_ENV
from ..metrics.multiproc import MultiprocDir
from ..worker.channel import FORK_SERVER_ENV, WorkerChannel

#: what the fork server imports before its first fork
PRELOAD = ["gta_core.worker.preload"]

_started_for: tuple[Any, ...] | None = None


def worker_context(dialect: str, metrics_directory: MultiprocDir | None = None) -> Any:
    """The multiprocess context to start workers with; starts its fork server now, preloading
    the worker's modules for ``dialect`` (while the caller goes on: the imports run over there),
    and prometheus_client in multiprocess mode if ``metrics_directory`` is given (it chooses its
    mode on import; without it, a worker's first metrics event imported it, 25-45 ms).

    One fork server serves a process; a supervisor on another database (or another
    ``sys.path``, or with metrics where the last had none or the reverse) in the same process,
    as in a test run, gets a new one, since what its workers need is not what the running server
    has imported. (Which directory does not matter: prometheus_client reads it from a worker's
    environment, the supervisor's, when it creates the worker's values.)"""
    global _started_for
    context = multiprocess.get_context("forkserver")
    wanted = (dialect, metrics_directory is not None, sys.executable, tuple(sys.path))
    if _started_for is not None and _started_for != wanted:
        forkserver._forkserver._stop()  # multiprocess's own tests stop it this way
    context.set_forkserver_preload(PRELOAD)
    server_environment = {drivers.ENV: dialect, FORK_SERVER_ENV: "1",
                          METRICS_ENV: str(metrics_directory.path) if metrics_directory is not None else None}
    previous = {name: os.environ.get(name) for name in server_environment}
    os.environ.update({name: value for name, value in server_environment.items() if value is not None})
    try:
        forkserver.ensure_running()
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    _started_for = wanted
    return context


def run_worker(settings: Settings, channel: WorkerChannel, environment: dict[str, str]) -> None:
    """A worker process's target: `gta_core.worker.process.worker_main`, imported here, in the
    worker (where the fork server has it loaded already), so that the supervisor, which never
    runs it, does not import the worker's code (asyncio among it) on its way to starting one."""
    from ..worker.process import worker_main
    worker_main(settings, channel, environment)
