"""Enqueue throughput: one task per transaction, and submit_many in batches of 1,000
(``submit_many_1000``: identical rows; ``submit_many_1000_distinct``: each row's arguments differ).

One per transaction comes two ways: ``submit_single`` inside the caller's transaction
(``with db.atomic() as tx: submit(tx, ...)``, the transactional message: its ``COMMIT`` is a round
trip of the caller's), and ``submit_single_own``, ``submit(db, ...)`` with no transaction open, which
GTA commits itself, as each peer's enqueue call does.

    python benchmarks/submit.py --database postgresql://postgres@127.0.0.1/test
"""
from __future__ import annotations

import time

from common import emit, fresh_table, parser

from gta_core import TaskRequest, submit, submit_many


def submit_rates(database: str, single: int, batched: int) -> dict[str, float]:
    """Tasks/s for ``submit_single[_own]`` (one per transaction) and ``submit_many_1000[_distinct]``
    (batches of 1,000; the distinct ones build their requests inside the timed loop)."""
    rates: dict[str, float] = {}
    with fresh_table(database) as runtime:
        db = runtime.db
        start = time.perf_counter()
        for _ in range(single):
            with db.atomic() as tx:
                submit(tx, "bench_noop")
        rates["submit_single"] = single / (time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(single):
            submit(db, "bench_noop")
        rates["submit_single_own"] = single / (time.perf_counter() - start)
        requests = [TaskRequest("bench_noop")] * 1000
        start = time.perf_counter()
        for _ in range(batched // 1000):
            with db.atomic() as tx:
                submit_many(tx, requests)
        rates["submit_many_1000"] = (batched // 1000) * 1000 / (time.perf_counter() - start)
        start = time.perf_counter()
        for batch in range(batched // 1000):
            with db.atomic() as tx:
                submit_many(tx, [TaskRequest("bench_numbered", {"n": batch * 1000 + n}) for n in range(1000)])
        rates["submit_many_1000_distinct"] = (batched // 1000) * 1000 / (time.perf_counter() - start)
    return rates


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--single", type=int, default=2000, help="tasks submitted one per transaction")
    p.add_argument("--batched", type=int, default=50000, help="tasks submitted with submit_many")
    args = p.parse_args()
    for name, rate in submit_rates(args.database, args.single, args.batched).items():
        emit(name, rate, "tasks/s")


if __name__ == "__main__":
    main()
