"""Submit-commit → handler-start latency into an idle running supervisor.

500 tasks, one per transaction, 20 ms apart; prints p50/p95/p99 in ms.

    python benchmarks/latency.py --database postgresql://postgres@127.0.0.1/test
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time

from common import Failed, emit, fresh_table, parser, supervisor, wait_until

from gta_core import submit, transaction


def latency(database: str, tasks: int, gap: float, workers: int) -> dict[str, float]:
    """Submit-commit → handler-start ms (``latency_p50``/``p95``/``p99``); raises Failed if a task never started."""
    ledger = tempfile.NamedTemporaryFile(prefix="gta-bench-", suffix=".ledger", delete=False).name
    os.environ["GTA_BENCH_LEDGER"] = ledger
    committed: dict[int, float] = {}
    with fresh_table(database) as runtime, supervisor("--workers", str(workers)):
        time.sleep(3)  # let the workers boot and go idle
        for _ in range(tasks):
            with transaction(runtime.db) as tx:
                task_id = submit(tx, "bench_stamp")
            committed[task_id] = time.time()
            time.sleep(gap)
        wait_until(lambda: sum(1 for _ in open(ledger)) >= tasks, timeout=60)
    started = {}
    for line in open(ledger):
        number, at, _pid = line.split()
        started[int(number)] = float(at)
    os.unlink(ledger)
    latencies = sorted((started[i] - committed[i]) * 1000 for i in committed if i in started)
    if len(latencies) != tasks:
        raise Failed(f"{len(latencies)} of {tasks} tasks started")
    quantiles = statistics.quantiles(latencies, n=100)
    return {"latency_p50": quantiles[49], "latency_p95": quantiles[94], "latency_p99": quantiles[98]}


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--tasks", type=int, default=500)
    p.add_argument("--gap", type=float, default=0.02)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    try:
        figures = latency(args.database, args.tasks, args.gap, args.workers)
    except Failed as failure:
        print(f"latency FAILED: {failure}")
        return
    for name, value in figures.items():
        emit(name, value, "ms")


if __name__ == "__main__":
    main()
