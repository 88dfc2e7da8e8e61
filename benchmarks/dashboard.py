"""The dashboard's pages on a big table: 1,000,000 rows filled by one set-based statement per
100,000 (PostgreSQL ``generate_series``), then each page served ``--rounds`` times through
`Dashboard.handle` (connect, bounded query, render: what a browser waits for, minus the socket).
Prints the median time per page as ``dashboard_<page>_ms``; the target is < 200 ms for the
first page and a filtered one.

Rows: ids in creation order one second apart (the newest is now); 1% failed (``error <i>``),
1% cancelled, 3% pending, the rest succeeded; queues q0..q4, keys k0..k19.

    python benchmarks/dashboard.py --database postgresql://postgres@127.0.0.1/test
"""
from __future__ import annotations

import statistics
import time

from common import emit, fresh_table, parser

from gta_core.dashboard.app import Dashboard, Request
from gta_core.runtime import Runtime

CHUNK = 100_000
STATUS = ("CASE WHEN mod(i, 100) = 0 THEN 'failed' WHEN mod(i, 100) = 1 THEN 'cancelled' "
          "WHEN mod(i, 100) BETWEEN 2 AND 4 THEN 'pending' ELSE 'succeeded' END")
FILL = ("INSERT INTO {t} (\"key\", queue, status, priority, args, run_at, attempts, max_attempts, created_at, "
        "updated_at, finished_at, last_error) "
        "SELECT 'k' || mod(i, 20), 'q' || mod(i, 5), {status}, 0, '{{\"n\": ' || i || '}}', {at}, 1, 3, {at}, {at}, "
        "CASE WHEN mod(i, 100) BETWEEN 2 AND 4 THEN NULL ELSE {at} END, "
        "CASE WHEN mod(i, 100) = 0 THEN 'error ' || i END "
        "FROM generate_series({first}, {last}) AS s(i)")
PAGES = {
    "first_page": "/tasks",
    "failed": "/tasks?status=failed",
    "failed_in_queue": "/tasks?status=failed&queue=q0",
    "key_and_status": "/tasks?status=succeeded&key=k7",
    "page_deep": "/tasks?before=500000",
    "last_hour": "/tasks?since=1h",
    "error_text": "/tasks?error=error+99",
    "task": "/tasks/777777",
    "overview": "/",
}


def fill(runtime: Runtime, rows: int) -> None:
    db, table = runtime.db, runtime.settings.table
    at = f"((statement_timestamp() AT TIME ZONE 'UTC') - ({rows} - i) * INTERVAL '1 second')"
    for first in range(1, rows + 1, CHUNK):
        with db.atomic():
            db.execute_sql(FILL.format(t=table, status=STATUS, at=at, first=first, last=min(rows, first + CHUNK - 1)))
    db.execute_sql(f"ANALYZE {table}")


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    if not args.database.startswith("postgres"):
        raise SystemExit("benchmarks/dashboard.py fills its table with PostgreSQL's generate_series: "
                         "give --database postgresql://...")
    with fresh_table(args.database, metrics=False) as runtime:
        started = time.monotonic()
        fill(runtime, args.rows)
        emit("dashboard_fill_s", time.monotonic() - started, "s")
        dashboard = Dashboard(runtime.settings)
        headers = {"Host": "127.0.0.1"}
        timings: dict[str, list[float]] = {name: [] for name in PAGES}
        for _ in range(args.rounds):  # every page in each round: a noisy neighbour slows all alike
            for name, url in PAGES.items():
                path, _, query = url.partition("?")
                fields = dict(pair.split("=", 1) for pair in query.split("&")) if query else {}
                fields = {key: value.replace("+", " ") for key, value in fields.items()}
                begun = time.perf_counter()
                response = dashboard.handle(Request("GET", path, fields, headers))
                timings[name].append(time.perf_counter() - begun)
                if response.status != 200:
                    raise SystemExit(f"{url}: HTTP {response.status}: {response.body[:300]!r}")
        for name, samples in timings.items():
            emit(f"dashboard_{name}_ms", 1000 * statistics.median(samples), "ms")


if __name__ == "__main__":
    main()
