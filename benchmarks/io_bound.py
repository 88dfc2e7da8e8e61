"""I/O-bound drain: N pre-submitted ``async def`` tasks that each ``await asyncio.sleep(0.02)``,
`gta-supervisor --workers W --concurrency C`, from the supervisor's start to the last success.

Verifies every task succeeded exactly once (attempts = 1) before printing a figure. compare.py
runs the same workload on pgqueuer and procrastinate.

    python benchmarks/io_bound.py --database postgresql://postgres@127.0.0.1/test --tasks 10000 --workers 2
"""
from __future__ import annotations

from common import Failed, emit, fresh_table, parser, timed_drain

from gta_core import TaskRequest, submit_many

KEY = "bench_io_sleep"


def io_drain(database: str, tasks: int, workers: int, concurrency: int = 100, sleep: float = 0.02,
             steady: dict[str, float] | None = None) -> float:
    """Tasks/s draining ``tasks`` pre-submitted sleeping coroutines with ``workers`` workers, each
    running up to ``concurrency`` at once; raises Failed unless each ran exactly once.
    ``steady``, if given, receives the rate from the first lease to the last success."""
    with fresh_table(database, plugins="benchmarks.io_tasks") as runtime:
        with runtime.db.atomic() as tx:
            submit_many(tx, [TaskRequest(KEY, {"seconds": sleep})] * tasks)
        return timed_drain(runtime.store, KEY, tasks, ["--workers", str(workers), "--concurrency", str(concurrency)],
                           steady)


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--tasks", type=int, default=10000)
    p.add_argument("--workers", type=int, nargs="+", default=[2])
    p.add_argument("--concurrency", type=int, default=100, help="async tasks at once per worker")
    p.add_argument("--sleep", type=float, default=0.02, help="seconds each task awaits")
    args = p.parse_args()
    for workers in args.workers:
        try:
            steady: dict[str, float] = {}
            emit(f"io_bound_w{workers}", io_drain(args.database, args.tasks, workers, args.concurrency, args.sleep,
                                                  steady), "tasks/s")
            emit(f"io_bound_w{workers}_from_first_lease", steady["rate"], "tasks/s")
        except Failed as failure:
            print(f"io_bound_w{workers} FAILED {failure}")


if __name__ == "__main__":
    main()
