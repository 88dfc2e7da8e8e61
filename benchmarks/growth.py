"""Leasing and submit cost as finished rows pile up: 0, 100,000 and 1,000,000 succeeded rows.

One table per size, filled with succeeded rows by one set-based statement. Then, in rounds that
visit every size in turn (so a noisy neighbour slows all sizes alike): submit ``--tasks`` tasks
one per transaction (submit cost), then lease and complete them 10 at a time through the store
(lease cost). Each call is timed on its own, and the median per-task cost of each size is printed
with its ratio to the first size: the median shrugs off the bursts of other load.

    python benchmarks/growth.py --database postgresql://postgres@127.0.0.1/test
"""
from __future__ import annotations

import contextlib
import os
import secrets
import statistics
import time
from collections.abc import Iterator

from common import emit, parser

import gta_core
from gta_core import runtime as runtime_module
from gta_core import submit
from gta_core.runtime import Runtime

COLUMNS = ("{k}, queue, status, priority, args, run_at, attempts, max_attempts, created_at, updated_at, "
           "finished_at, order_key")
ROW = "'bench_noop', 'default', 'succeeded', 0, '{{}}', {now}, 1, 5, {now}, {now}, {now}, {order_key}"
#: the finished rows' order_key with --order-keys N: one of N keys ({i}: the row number)
ORDER_KEY = {"postgres": "'k' || mod({i}, {keys})", "sqlite": "'k' || ({i} % {keys})",
             "mysql": "CONCAT('k', FLOOR(RAND() * {keys}))"}
CHUNK = 100_000  # rows per statement (and transaction): each stays far inside the statement timeout
FILL = {
    "postgres": f"INSERT INTO {{t}} ({COLUMNS}) SELECT {ROW} FROM generate_series({{first}}, {{last}}) AS s(i)",
    "sqlite": ("WITH RECURSIVE s(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM s WHERE i < {last}) "
               f"INSERT INTO {{t}} ({COLUMNS}) SELECT {ROW} FROM s"),
    # MySQL's recursive CTEs stop at 1,000 levels: seed one row, then double it
    "mysql": f"INSERT INTO {{t}} ({COLUMNS}) SELECT {ROW} FROM {{t}} LIMIT {{last}}",
}


def fill(runtime: Runtime, rows: int, keys: int) -> None:
    """Add ``rows`` succeeded rows with set-based SQL, then refresh the planner's statistics."""
    store, db = runtime.store, runtime.db
    order_key = ORDER_KEY[store.dialect].format(i="i", keys=keys) if keys else "NULL"
    quoted = {"k": store.sql.dialect.q("key"), "now": store.sql.dialect.now, "order_key": order_key}
    count = 0
    if store.dialect == "mysql":
        db.execute_sql(f"INSERT INTO {store.table} ({COLUMNS.format(**quoted)}) VALUES ({ROW.format(**quoted)})")
        count = 1
    while count < rows:
        if store.dialect == "mysql":  # the rows so far, doubled at most
            chunk = min(CHUNK, rows - count, count)
            sql = FILL["mysql"].format(t=store.table, last=chunk, **quoted)
        else:
            chunk = min(CHUNK, rows - count)
            sql = FILL[store.dialect].format(t=store.table, first=count + 1, last=count + chunk, **quoted)
        with db.atomic():
            db.execute_sql(sql)
        count += chunk
    db.execute_sql({"postgres": "ANALYZE {t}", "mysql": "ANALYZE TABLE {t}", "sqlite": "ANALYZE"}[store.dialect]
                   .format(t=store.table))


@contextlib.contextmanager
def tables(database: str, sizes: list[int], keys: int) -> Iterator[dict[int, gta_core.Settings]]:
    """A migrated, filled table per size (its settings); all dropped afterwards."""
    os.environ.update(GTA_PLUGINS="benchmarks.bench_tasks", GTA_DATABASE_URL=database)
    made: dict[int, gta_core.Settings] = {}
    try:
        for size in sizes:
            settings = gta_core.load_settings({"table": f"gta_bench_{secrets.token_hex(3)}"})
            made[size] = settings
            runtime = Runtime(settings)
            runtime.store.migrate()
            start = time.perf_counter()
            if size:
                fill(runtime, size, keys)
            emit(f"fill_seconds_{size}", time.perf_counter() - start, "s")
            runtime.db.close()
        yield made
    finally:
        runtime_module.reset()
        for settings in made.values():
            runtime = Runtime(settings)
            runtime.store.drop()
            runtime.db.close()


def round_costs(settings: gta_core.Settings, tasks: int, keys: int) -> tuple[list[float], list[float]]:
    """One round on one table: seconds per task of each submit, and of each lease + complete batch."""
    runtime = runtime_module.configure(settings)
    store, db = runtime.store, runtime.db
    runtime.plugins  # noqa: B018 - built before the clock starts
    db.connect(reuse_if_open=True)
    submits: list[float] = []
    leases: list[float] = []
    try:
        for number in range(tasks):
            start = time.perf_counter()
            with db.atomic() as tx:
                submit(tx, "bench_noop", order_key=f"k{number % keys}" if keys else None)
            submits.append(time.perf_counter() - start)
        while True:
            start = time.perf_counter()
            leased = store.lease("bench-owner", ["default"], 10, 60)
            if not leased:
                return submits, leases
            for task in leased:
                store.complete("bench-owner", task.id)
            leases.append((time.perf_counter() - start) / len(leased))
    finally:
        db.close()


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--sizes", type=int, nargs="+", default=[0, 100_000, 1_000_000])
    p.add_argument("--tasks", type=int, default=2000, help="tasks submitted and leased per size and round")
    p.add_argument("--rounds", type=int, default=3, help="rounds (each visits every size)")
    p.add_argument("--order-keys", type=int, default=0,
                   help="spread finished and new tasks over this many FIFO order keys (default: none)")
    args = p.parse_args()
    samples: dict[int, tuple[list[float], list[float]]] = {size: ([], []) for size in args.sizes}
    with tables(args.database, args.sizes, args.order_keys) as settings:
        for _ in range(args.rounds):
            for size in args.sizes:
                submits, leases = round_costs(settings[size], args.tasks, args.order_keys)
                samples[size][0].extend(submits)
                samples[size][1].extend(leases)
    base = args.sizes[0]
    for index, name in enumerate(("submit_cost", "lease_complete_cost")):
        medians = {size: statistics.median(samples[size][index]) for size in args.sizes}
        for size in args.sizes:
            emit(f"{name}_{size}", medians[size] * 1e6, "us/task")
            if size != base:
                emit(f"{name}_ratio_{size}_vs_{base}", medians[size] / medians[base], "x")

if __name__ == "__main__":
    main()
