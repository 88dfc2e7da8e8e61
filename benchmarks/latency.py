"""Submit-commit → handler-start latency into an idle running supervisor.

500 tasks, one per transaction, 20 ms apart; prints p50/p95/p99 in ms.

    python benchmarks/latency.py --database postgresql://postgres@127.0.0.1/test
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time

from common import emit, fresh_table, parser, supervisor, wait_until

from gta_core import submit, transaction


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--tasks", type=int, default=500)
    p.add_argument("--gap", type=float, default=0.02)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    ledger = tempfile.NamedTemporaryFile(prefix="gta-bench-", suffix=".ledger", delete=False).name
    os.environ["GTA_BENCH_LEDGER"] = ledger
    committed: dict[int, float] = {}
    with fresh_table(args.database) as runtime, supervisor("--workers", str(args.workers)):
        time.sleep(3)  # let the workers boot and go idle
        for _ in range(args.tasks):
            with transaction(runtime.db) as tx:
                task_id = submit(tx, "bench_stamp")
            committed[task_id] = time.time()
            time.sleep(args.gap)
        wait_until(lambda: sum(1 for _ in open(ledger)) >= args.tasks, timeout=60)
    started = {}
    for line in open(ledger):
        task_id, at, _pid = line.split()
        started[int(task_id)] = float(at)
    os.unlink(ledger)
    latencies = sorted((started[i] - committed[i]) * 1000 for i in committed if i in started)
    if len(latencies) != args.tasks:
        print(f"latency FAILED: {len(latencies)} of {args.tasks} tasks started")
        return
    quantiles = statistics.quantiles(latencies, n=100)
    emit("latency_p50", quantiles[49], "ms")
    emit("latency_p95", quantiles[94], "ms")
    emit("latency_p99", quantiles[98], "ms")


if __name__ == "__main__":
    main()
