"""Leasing and submit cost as finished rows pile up: 0, 100,000 and 1,000,000 succeeded rows.

For each size: submit 2,000 tasks one per transaction (submit cost), then lease and
complete them 10 at a time through the store (lease cost), and print both per task.

    python benchmarks/growth.py --database postgresql://postgres@127.0.0.1/test
"""
from __future__ import annotations

import time

from common import emit, fresh_table, parser

from gta_core import submit

FILL = {
    "postgres": ("INSERT INTO {t} (key, queue, status, priority, args, run_at, attempts, max_attempts, "
                 "created_at, updated_at, finished_at) SELECT 'bench_noop', 'default', 'succeeded', 0, '{{}}', "
                 "now(), 1, 5, now(), now(), now() FROM generate_series(1, {n})"),
    "mysql": ("INSERT INTO {t} (`key`, queue, status, priority, args, run_at, attempts, max_attempts, "
              "created_at, updated_at, finished_at) SELECT 'bench_noop', 'default', 'succeeded', 0, '{{}}', "
              "UTC_TIMESTAMP(6), 1, 5, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6), UTC_TIMESTAMP(6) FROM seq_1_to_{n}"),
    "sqlite": ("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) "
               "INSERT INTO {t} (key, queue, status, priority, args, run_at, attempts, max_attempts, "
               "created_at, updated_at, finished_at) SELECT 'bench_noop', 'default', 'succeeded', 0, '{{}}', "
               "gta_now(), 1, 5, gta_now(), gta_now(), gta_now() FROM s"),
}


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--sizes", type=int, nargs="+", default=[0, 100_000, 1_000_000])
    p.add_argument("--tasks", type=int, default=2000)
    args = p.parse_args()
    for size in args.sizes:
        with fresh_table(args.database) as runtime:
            store, db = runtime.store, runtime.db
            if size:
                with db.atomic():
                    db.execute_sql(FILL[store.dialect].format(t=store.table, n=size))
            if store.dialect == "postgres":
                db.execute_sql(f"ANALYZE {store.table}")
            start = time.perf_counter()
            for _ in range(args.tasks):
                with db.atomic() as tx:
                    submit(tx, "bench_noop")
            emit(f"submit_cost_{size}", (time.perf_counter() - start) / args.tasks * 1e6, "us/task")
            start = time.perf_counter()
            done = 0
            while done < args.tasks:
                leased = store.lease("bench-owner", ["default"], 10, 60)
                for task in leased:
                    store.complete("bench-owner", task.id)
                done += len(leased)
                if not leased:
                    break
            emit(f"lease_complete_cost_{size}", (time.perf_counter() - start) / max(done, 1) * 1e6, "us/task")


if __name__ == "__main__":
    main()
