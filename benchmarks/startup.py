"""Start-up: from ``exec gta-supervisor`` to the first task's handler starting, and where it goes.

One task waits in a fresh table; the script runs the installed ``gta-supervisor`` console
script (what a deploy runs), stamps each of its log lines on arrival, and reads the handler's
start off the ledger it appends to. Per run (median of ``--runs``):

- ``startup_first_task``: exec → the handler started, the figure a deploy or an autoscaled
  worker waits for;
- ``startup_supervisor_ready``: exec → the supervisor's services are up (its interpreter,
  imports, plugins, connection and schema check);
- ``startup_worker_started``: exec → the first worker process exists;
- ``startup_worker_ready``: exec → the first worker serves (its imports, plugins, runtime);
- and, from separate processes, ``startup_interpreter`` (``python -c pass``) and
  ``startup_imports`` (on top of it, what the supervisor imports before it has started its
  workers: the command, peewee with the one driver, the supervisor's modules).

    python benchmarks/startup.py --database postgresql://postgres@127.0.0.1/test
"""
from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import Failed, compile_bytecode, emit, fresh_table, parser, wait_until

from gta_core import submit, transaction
from gta_core.config import dialect_of_url

#: what the supervisor's and the workers' INFO lines say at each milestone
MILESTONES = {"startup_supervisor_ready": "worker(s) x", "startup_worker_started": "worker 0 started",
              "startup_worker_ready": "serving queues"}


def _clock(command: list[str], runs: int) -> float:
    """Median seconds ``command`` takes to run to its end."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def one_start(runtime_db: object, workers: int) -> dict[str, float]:
    """Seconds from exec to each milestone of one supervisor's start, with one task waiting."""
    ledger = tempfile.NamedTemporaryFile(prefix="gta-bench-", suffix=".ledger", delete=False).name
    os.environ["GTA_BENCH_LEDGER"] = ledger
    with transaction(runtime_db) as tx:
        submit(tx, "bench_stamp")
    seen: dict[str, float] = {}
    script = str(Path(sys.executable).with_name("gta-supervisor"))
    start = time.time()
    process = subprocess.Popen([script, "--workers", str(workers), "--log-level", "INFO",
                                "--metrics-bind", "127.0.0.1:0"], stderr=subprocess.PIPE, env=os.environ.copy())

    def read_lines() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            now = time.time()
            for name, marker in MILESTONES.items():
                if name not in seen and marker.encode() in line:
                    seen[name] = now - start
    reader = threading.Thread(target=read_lines, daemon=True)
    reader.start()
    try:
        if not wait_until(lambda: os.path.getsize(ledger) > 0, timeout=30, interval=0.005):
            raise Failed("the waiting task never started")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        reader.join(10)
    _task, started_at, _pid = Path(ledger).read_text().split()
    os.unlink(ledger)
    seen["startup_first_task"] = float(started_at) - start
    if set(seen) != {*MILESTONES, "startup_first_task"}:
        raise Failed(f"milestones missing from the log: {sorted(set(MILESTONES) - set(seen))}")
    return seen


def startup(database: str, runs: int, workers: int) -> dict[str, float]:
    """Median ms of each start-up figure (see the module doc)."""
    compile_bytecode()
    python = sys.executable
    interpreter = _clock([python, "-c", "pass"], runs)
    dialect = dialect_of_url(database)
    imports = _clock([python, "-c", "import gta_core.cli.supervisor_command, gta_core.db.drivers as d;"
                      f"d.import_peewee_for({dialect!r}); import gta_core.supervisor.manager"], runs) - interpreter
    samples: dict[str, list[float]] = {}
    with fresh_table(database) as runtime:
        for _ in range(runs):
            for name, seconds in one_start(runtime.db, workers).items():
                samples.setdefault(name, []).append(seconds)
    figures = {"startup_interpreter": interpreter, "startup_imports": imports}
    figures.update((name, statistics.median(values)) for name, values in samples.items())
    return {name: seconds * 1000 for name, seconds in figures.items()}


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    try:
        figures = startup(args.database, args.runs, args.workers)
    except Failed as failure:
        print(f"startup FAILED: {failure}")
        return
    for name in ("startup_interpreter", "startup_imports", *MILESTONES, "startup_first_task"):
        emit(name, figures[name], "ms")


if __name__ == "__main__":
    main()
