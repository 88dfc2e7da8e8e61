"""What the sidecar knows of its own supervisor, for the overview: the status file the
supervisor writes (`metrics.health`), its process's start time, and the tasks its workers ran
(the ``gta_tasks_completed_total`` counter in their metric files)."""
from __future__ import annotations

import datetime as dt
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..metrics.health import DatabaseCheck, SupervisorStatus, evaluate
from ..metrics.multiproc import MultiprocDir
from .pages import LocalSupervisor

COMPLETED = "gta_tasks_completed_total"


def read_local(directory: MultiprocDir, supervisor_pid: int, collector: Any) -> LocalSupervisor | None:
    """This sidecar's supervisor, or None before its first status file. ``collector`` is the
    sidecar's merge of every process's metric files."""
    status = SupervisorStatus.read(directory.path)
    if status is None:
        return None
    # the database's part of health is left out: the page showing this has just read it
    healthy, _ = evaluate(status, os.getppid() == supervisor_pid, DatabaseCheck(True), time.monotonic())
    return LocalSupervisor(socket.gethostname(), status.pid, process_start(status.pid), status.live,
                           status.workers, _tasks_run(collector), healthy)


def _tasks_run(collector: Any) -> int | None:
    total, seen = 0.0, False
    for family in collector.collect():
        for sample in family.samples:
            if sample.name == COMPLETED:
                total += sample.value
                seen = True
    return int(total) if seen else None


def process_start(pid: int) -> dt.datetime | None:
    """When process ``pid`` started (Linux ``/proc``), or None where that cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        ticks = int(fields[19])  # field 22 of stat(5), counted after the command name
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return dt.datetime.fromtimestamp(boot + ticks / os.sysconf("SC_CLK_TCK"), dt.timezone.utc)
