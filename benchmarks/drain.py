"""Drain throughput: N pre-submitted no-op tasks, `gta-supervisor --workers W`, start to last success.

Verifies every task succeeded exactly once (attempts = 1) before printing a figure.

    python benchmarks/drain.py --database postgresql://postgres@127.0.0.1/test --workers 1 2 4
"""
from __future__ import annotations

import time

from common import Failed, emit, fresh_table, parser, supervisor, wait_until

from gta_core import TaskRequest, submit_many
from gta_core.store import parse_timestamp


def drain(database: str, tasks: int, workers: int, threads: int = 1, batch: int | None = None,
          steady: dict[str, float] | None = None) -> float:
    """Tasks/s draining ``tasks`` pre-submitted no-ops with ``workers`` workers, from the supervisor's
    start to the last success; raises Failed unless each ran exactly once.

    The end is the last ``finished_at`` (this host's clock, like the start), so the poll that
    notices the end can be cheap and infrequent: it never steals the measured system's CPU.
    ``steady``, if given, receives the rate from the first lease to the last success.
    """
    with fresh_table(database) as runtime:
        store = runtime.store
        with runtime.db.atomic() as tx:
            submit_many(tx, [TaskRequest("bench_noop")] * tasks)
        # only bench_noop rows: plugins (monitor, cleanup) may add their own periodic tasks to the table
        key = "`key`" if store.dialect == "mysql" else '"key"'
        where = f"FROM {store.table} WHERE {key} = 'bench_noop'"
        unfinished = f"SELECT 1 {where} AND status IN ('pending', 'running') LIMIT 1"
        extra = ["--batch", str(batch)] if batch else []
        start = time.time()
        with supervisor("--workers", str(workers), "--threads", str(threads), *extra):
            done = wait_until(lambda: store.db.execute_sql(unfinished).fetchone() is None, timeout=600,
                              interval=0.05)
        rows = store.db.execute_sql(f"SELECT status, attempts, COUNT(*) {where} GROUP BY status, attempts").fetchall()
        if not done or [tuple(row) for row in rows] != [("succeeded", 1, tasks)]:
            raise Failed(f"bench_noop (status, attempts, count)={rows}")
        first, last = (parse_timestamp(value) for value in store.db.execute_sql(
            f"SELECT MIN(started_at), MAX(finished_at) {where}").fetchone())
        assert first and last
        if steady is not None:
            steady["rate"] = tasks / max((last - first).total_seconds(), 1e-6)
        return tasks / (last.timestamp() - start)


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--tasks", type=int, default=20000)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=None)
    args = p.parse_args()
    for workers in args.workers:
        try:
            steady: dict[str, float] = {}
            emit(f"drain_w{workers}", drain(args.database, args.tasks, workers, args.threads, args.batch, steady),
                 "tasks/s")
            emit(f"drain_w{workers}_from_first_lease", steady["rate"], "tasks/s")
        except Failed as failure:
            print(f"drain_w{workers} FAILED {failure}")


if __name__ == "__main__":
    main()
