"""Drain throughput: N pre-submitted no-op tasks, `gta-supervisor --workers W`, start to last success.

Verifies every task succeeded exactly once (attempts = 1) before printing a figure.

    python benchmarks/drain.py --database postgresql://postgres@127.0.0.1/test --workers 1 2 4
"""
from __future__ import annotations

import time

from common import emit, fresh_table, parser, supervisor, wait_until

from gta_core import TaskRequest, submit_many


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--tasks", type=int, default=20000)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=None)
    args = p.parse_args()
    for workers in args.workers:
        with fresh_table(args.database) as runtime:
            store = runtime.store
            with runtime.db.atomic() as tx:
                submit_many(tx, [TaskRequest("bench_noop")] * args.tasks)
            extra = ["--batch", str(args.batch)] if args.batch else []
            start = time.perf_counter()
            with supervisor("--workers", str(workers), "--threads", str(args.threads), *extra):
                done = wait_until(lambda store=store: store.counts().get(("default", "succeeded"), 0) >= args.tasks,
                                  timeout=600, interval=0.01)
                elapsed = time.perf_counter() - start
            counts = store.counts()
            once = store.db.execute_sql(f"SELECT COUNT(*) FROM {store.table} WHERE attempts = 1").fetchone()[0]
            if not done or counts != {("default", "succeeded"): args.tasks} or once != args.tasks:
                print(f"drain_w{workers} FAILED counts={counts} attempts_1={once}")
                continue
            emit(f"drain_w{workers}", args.tasks / elapsed, "tasks/s")


if __name__ == "__main__":
    main()
