"""Short tasks behind a long one: how long an idle worker leaves them waiting.

`gta-supervisor --workers 2 --threads 1`, run after run: first ``--warm`` no-op tasks (the
workers have been running quick tasks, so they prefetch), then ``--idle`` seconds without work
(idle workers poll less and less often, down to once per scan_interval), then one long task
(``--long``, 8 s) and right behind it, in a transaction of its own, ``--short-count`` short
ones (``--short``, 10 ms). The worker that leases the long task may prefetch the short ones
with it and has to hand them back for the idle worker.
Each short task's wait is its ``started_at - created_at`` (the database's clock). Prints each
run's worst wait, then the worst and the median of the runs' worst.

    python benchmarks/short_behind_long.py --database postgresql://postgres@127.0.0.1/test --runs 20
"""
from __future__ import annotations

import statistics
import time

from common import Failed, emit, fresh_table, parser, supervisor, wait_until

from gta_core import TaskRequest, submit_many
from gta_core.store.rows import parse_timestamp
from gta_core.store.task_store import TaskStore


def unfinished(store: TaskStore, ids: list[int]) -> bool:
    return any(status in ("pending", "running") for status in store.statuses(ids).values())


def worst_wait(store: TaskStore, ids: list[int]) -> float:
    """The longest ``started_at - created_at`` of ``ids``, in seconds."""
    marks = ", ".join(["?"] * len(ids))
    rows = store.db.execute_sql(store._d.fix(f"SELECT created_at, started_at FROM {store.table} "
                                             f"WHERE id IN ({marks})"), ids).fetchall()
    waits = []
    for created, started in rows:
        start, submitted = parse_timestamp(started), parse_timestamp(created)
        assert start is not None and submitted is not None
        waits.append((start - submitted).total_seconds())
    return max(waits)


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--long", type=float, default=8.0, help="seconds the long task runs")
    p.add_argument("--short", type=float, default=0.01, help="seconds each short task runs")
    p.add_argument("--short-count", type=int, default=6)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--warm", type=int, default=400, help="no-op tasks run before each run")
    p.add_argument("--idle", type=float, default=7.0, help="seconds without work before each run")
    args = p.parse_args()
    with fresh_table(args.database) as runtime:
        store = runtime.store
        with supervisor("--workers", str(args.workers), "--threads", "1"):
            worst = []
            for run in range(1, args.runs + 1):
                warm = submit_many(runtime.db, [TaskRequest("bench_noop")] * args.warm)
                if not wait_until(lambda ids=warm: not unfinished(store, ids), timeout=60):
                    raise Failed(f"run {run}: the no-op tasks did not finish")
                time.sleep(args.idle)
                (long_id,) = submit_many(runtime.db, [TaskRequest("bench_sleep", {"seconds": args.long})])
                short = submit_many(runtime.db, [TaskRequest("bench_sleep", {"seconds": args.short})]
                                    * args.short_count)
                if not wait_until(lambda ids=short: not unfinished(store, ids), timeout=args.long * 3 + 30):
                    raise Failed(f"run {run}: the short tasks did not finish")
                worst.append(worst_wait(store, short))
                print(f"run {run}: worst wait {worst[-1]:.3f}s", flush=True)
                if not wait_until(lambda ids=[long_id]: not unfinished(store, ids), timeout=args.long * 3 + 30):
                    raise Failed(f"run {run}: the long task did not finish")
                time.sleep(0.2)
    emit("short_behind_long_worst", max(worst), "s")
    emit("short_behind_long_median_of_worst", statistics.median(worst), "s")


if __name__ == "__main__":
    main()
