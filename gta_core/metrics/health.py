"""What ``/healthz`` answers: is this supervisor, are its background loops, its workers and
the database healthy?

The supervisor writes a small status file into its multiprocess directory about once a
second (at once when something changed); the sidecar reads it on each probe. A status file
that stopped changing means the supervisor's main loop is stuck even though the process
exists; a loop of `gta_core.supervisor.services` that is not running, or stuck in one iteration, is
named under ``services``.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

STATUS_FILE = "supervisor.json"
STALE_AFTER = 10.0  # seconds without a status update before the supervisor counts as stuck
WORKER_GRACE = 10.0  # a worker may be missing this long (being restarted) before it is a failure


@dataclasses.dataclass(frozen=True)
class SupervisorStatus:
    pid: int
    written_at: float  # time.monotonic() (one clock for every process of the host, never stepped)
    workers: int  # how many the supervisor should run
    live: int  # how many worker processes exist
    down_since: float | None  # time.monotonic() since when fewer than ``workers`` were live
    stopping: bool
    #: the supervisor's background loops (`ServiceRunner.health`): name -> ok, restarts, error
    services: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def write(self, directory: Path) -> None:
        """Replace the status file atomically, so a reader never sees half of it."""
        temporary = directory / f".{STATUS_FILE}.tmp"
        temporary.write_text(json.dumps(dataclasses.asdict(self)))
        os.replace(temporary, directory / STATUS_FILE)

    @classmethod
    def read(cls, directory: Path) -> SupervisorStatus | None:
        try:
            return cls(**json.loads((directory / STATUS_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None


@dataclasses.dataclass(frozen=True)
class DatabaseCheck:
    ok: bool
    error: str | None = None


def evaluate(status: SupervisorStatus | None, supervisor_alive: bool, database: DatabaseCheck,
             now: float) -> tuple[bool, dict[str, Any]]:
    """(healthy, the JSON body): healthy only if the supervisor, its background loops, its
    workers and the database are."""
    supervisor_ok = (supervisor_alive and status is not None and now - status.written_at < STALE_AFTER
                     and not status.stopping)
    workers_ok = status is not None and (
        status.live >= status.workers
        or (status.down_since is not None and now - status.down_since < WORKER_GRACE))
    services = status.services if status is not None else {}
    services_ok = all(service.get("ok") for service in services.values())
    healthy = supervisor_ok and services_ok and workers_ok and database.ok
    body: dict[str, Any] = {
        "status": "ok" if healthy else "unhealthy",
        "supervisor": {"ok": supervisor_ok, "pid": status.pid if status else None,
                       "stopping": status.stopping if status else None},
        "services": {"ok": services_ok, **services},
        "workers": {"ok": workers_ok, "live": status.live if status else 0,
                    "expected": status.workers if status else None},
        "database": {"ok": database.ok, "error": database.error},
    }
    return healthy, body
