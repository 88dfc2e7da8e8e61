"""Drain throughput: N pre-submitted no-op tasks, `gta-supervisor --workers W`, start to last success.

Verifies every task succeeded exactly once (attempts = 1) before printing a figure.
``--limit-concurrency N`` / ``--limit-rate R`` put a global limit on the tasks' queue first
(`gta_core.limit_queue`), so the figure is the drain through the limited lease.
``--fail-first`` drains tasks that ask for an immediate retry on their first attempt
(``bench_fail_once``): the failing path, a retry write with its attempt log entry per task,
then a success (attempts = 2).

    python benchmarks/drain.py --database postgresql://postgres@127.0.0.1/test --workers 1 2 4
    python benchmarks/drain.py --database postgresql://postgres@127.0.0.1/test --workers 2 --limit-concurrency 8

``--otel memory`` traces every submit and attempt into an in-memory exporter in each process
(`benchmarks/otel_memory.py`; needs ``gta[otel]``); without it the ``otel`` plugin is loaded
but has no tracer provider where OpenTelemetry is installed, and registers no hook where not.
"""
from __future__ import annotations

from common import Failed, emit, fresh_table, parser, timed_drain

from gta_core import TaskRequest, limit_queue, submit_many

PLUGINS = "benchmarks.bench_tasks"


def drain(database: str, tasks: int, workers: int, threads: int = 1, batch: int | None = None,
          steady: dict[str, float] | None = None, concurrency: int | None = None,
          rate: str | None = None, plugins: str = PLUGINS, fail_first: bool = False) -> float:
    """Tasks/s draining ``tasks`` pre-submitted no-ops with ``workers`` workers (`timed_drain`),
    under a limit of their queue when ``concurrency`` or ``rate`` is given; with
    ``fail_first``, tasks that retry once at once before they succeed."""
    key = "bench_fail_once" if fail_first else "bench_noop"
    with fresh_table(database, plugins) as runtime:
        with runtime.db.atomic() as tx:
            submit_many(tx, [TaskRequest(key)] * tasks)
        if concurrency is not None or rate is not None:
            queue = runtime.plugins.registry.get(key).queue
            limit_queue(queue, concurrency, rate, runtime=runtime)
        extra = ["--batch", str(batch)] if batch else []
        return timed_drain(runtime.store, key, tasks,
                           ["--workers", str(workers), "--threads", str(threads), *extra], steady,
                           attempts=2 if fail_first else 1)


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--tasks", type=int, default=20000)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--limit-concurrency", type=int, default=None, metavar="N",
                   help="limit the queue to N tasks running at once (global limit)")
    p.add_argument("--limit-rate", default=None, metavar="R", help="limit the queue's starts, e.g. 1000/s")
    p.add_argument("--otel", choices=["memory"], default=None,
                   help="trace into an in-memory exporter in every process (benchmarks/otel_memory.py)")
    p.add_argument("--fail-first", action="store_true",
                   help="tasks ask for an immediate retry on their first attempt (the failing path)")
    args = p.parse_args()
    suffix = "".join([f"_c{args.limit_concurrency}" if args.limit_concurrency is not None else "",
                      f"_r{args.limit_rate.replace('/', 'per')}" if args.limit_rate is not None else "",
                      "_otel_memory" if args.otel else "", "_fail_first" if args.fail_first else ""])
    plugins = f"{PLUGINS},benchmarks.otel_memory" if args.otel else PLUGINS
    for workers in args.workers:
        name = f"drain_w{workers}{suffix}"
        try:
            steady: dict[str, float] = {}
            emit(name, drain(args.database, args.tasks, workers, args.threads, args.batch, steady,
                             args.limit_concurrency, args.limit_rate, plugins, args.fail_first), "tasks/s")
            emit(f"{name}_from_first_lease", steady["rate"], "tasks/s")
        except Failed as failure:
            print(f"{name} FAILED {failure}")


if __name__ == "__main__":
    main()
