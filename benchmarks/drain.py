"""Drain throughput: N pre-submitted no-op tasks, `gta-supervisor --workers W`, start to last success.

Verifies every task succeeded exactly once (attempts = 1) before printing a figure.

    python benchmarks/drain.py --database postgresql://postgres@127.0.0.1/test --workers 1 2 4
"""
from __future__ import annotations

from common import Failed, emit, fresh_table, parser, timed_drain

from gta_core import TaskRequest, submit_many


def drain(database: str, tasks: int, workers: int, threads: int = 1, batch: int | None = None,
          steady: dict[str, float] | None = None) -> float:
    """Tasks/s draining ``tasks`` pre-submitted no-ops with ``workers`` workers (`timed_drain`)."""
    with fresh_table(database) as runtime:
        with runtime.db.atomic() as tx:
            submit_many(tx, [TaskRequest("bench_noop")] * tasks)
        extra = ["--batch", str(batch)] if batch else []
        return timed_drain(runtime.store, "bench_noop", tasks,
                           ["--workers", str(workers), "--threads", str(threads), *extra], steady)


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
