"""What a worker process loads: only its database's driver, and prometheus_client only with metrics on.

peewee imports every driver it finds (see gta_core/drivers.py); psycopg and psycopg2 alone are
some 17 MB of a worker's memory. The drivers are compiled extensions, so a process's memory map
shows which it loaded.
"""
from __future__ import annotations

import os
import subprocess
import sys

from ..support.helpers import Env, children, cmdline, wait_for, wait_log
from ..support.servers import free_port, http_get

#: a piece of each compiled driver's file path, by the backend that needs it
DRIVER_FILES = {"sqlite": "_sqlite3.", "postgres": "psycopg2/_psycopg.", "mariadb": None}
FOREIGN = ["_sqlite3.", "psycopg2/_psycopg.", "psycopg_binary/", "psycopg_c/"]


def mapped_files(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as maps:
        return maps.read()


def test_children_map_only_their_databases_driver(env: Env, backend: str) -> None:
    bind = f"127.0.0.1:{free_port()}"
    supervisor = env.supervisor(2, "--metrics", "on", "--metrics-bind", bind)
    wait_log(supervisor, "serving queues", 2)
    wait_for(lambda: http_get(f"http://{bind}/metrics", 5)[0] == 200, what="the metrics sidecar")
    sidecars = [pid for pid in children(supervisor.pid) if "gta_core.metrics.sidecar" in cmdline(pid)]
    own = DRIVER_FILES[backend]
    for pid in [*supervisor.worker_pids(), *sidecars]:
        files = mapped_files(pid)
        assert [part for part in FOREIGN if part != own and part in files] == [], cmdline(pid)
        if own is not None:
            assert own in files
    assert len(sidecars) == 1
    assert "GTA_DRIVER_DIALECT" not in os.environ


def test_hidden_drivers_stay_importable_for_the_processes_code() -> None:
    probe = ("import os, sys, gta_core, peewee; "
             "assert 'psycopg2' not in sys.modules and peewee.psycopg2 is None; "
             "assert 'GTA_DRIVER_DIALECT' not in os.environ; "  # consumed: a handler's subprocess sees every driver
             "import psycopg2, pymysql")
    result = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "GTA_DRIVER_DIALECT": "sqlite"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_task_events_leave_prometheus_client_alone_with_metrics_off() -> None:
    probe = ("import sys, types, gta_plugins.metrics as m; "
             "m.gta_task_events('started', [types.SimpleNamespace(key='k', queue='q', run_at=None)], [None], [None]); "
             "assert 'prometheus_client' not in sys.modules, 'imported'")
    environ = {name: value for name, value in os.environ.items() if name != "PROMETHEUS_MULTIPROC_DIR"}
    result = subprocess.run([sys.executable, "-c", probe], env=environ, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
