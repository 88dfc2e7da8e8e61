"""Drain throughput: N pre-submitted no-op tasks, `gta-supervisor --workers W`, start to last success.

Verifies every task succeeded exactly once (attempts = 1) before printing a figure.

    python benchmarks/drain.py --database postgresql://postgres@127.0.0.1/test --workers 1 2 4
"""
from __future__ import annotations

import time

from common import Failed, emit, fresh_table, parser, supervisor, wait_until

from gta_core import TaskRequest, submit_many


def drain(database: str, tasks: int, workers: int, threads: int = 1, batch: int | None = None) -> float:
    """Tasks/s draining ``tasks`` pre-submitted no-ops with ``workers`` workers; raises Failed if not exactly once."""
    with fresh_table(database) as runtime:
        store = runtime.store
        with runtime.db.atomic() as tx:
            submit_many(tx, [TaskRequest("bench_noop")] * tasks)
        # only bench_noop rows: plugins (monitor, cleanup) may add their own periodic tasks to the table
        key = "`key`" if store.dialect == "mysql" else '"key"'
        where = f"FROM {store.table} WHERE {key} = 'bench_noop'"
        succeeded = f"SELECT COUNT(*) {where} AND status = 'succeeded'"
        extra = ["--batch", str(batch)] if batch else []
        start = time.perf_counter()
        with supervisor("--workers", str(workers), "--threads", str(threads), *extra):
            done = wait_until(lambda: store.db.execute_sql(succeeded).fetchone()[0] >= tasks,
                              timeout=600, interval=0.01)
            elapsed = time.perf_counter() - start
        rows = store.db.execute_sql(f"SELECT status, attempts, COUNT(*) {where} GROUP BY status, attempts").fetchall()
        if not done or [tuple(row) for row in rows] != [("succeeded", 1, tasks)]:
            raise Failed(f"bench_noop (status, attempts, count)={rows}")
        return tasks / elapsed


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--tasks", type=int, default=20000)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=None)
    args = p.parse_args()
    for workers in args.workers:
        try:
            emit(f"drain_w{workers}", drain(args.database, args.tasks, workers, args.threads, args.batch), "tasks/s")
        except Failed as failure:
            print(f"drain_w{workers} FAILED {failure}")


if __name__ == "__main__":
    main()
