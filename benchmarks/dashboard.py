"""The dashboard's pages and live updates on a big table: 1,000,000 rows filled by one
set-based statement per 100,000 (PostgreSQL ``generate_series``), then each page and each
live update served ``--rounds`` times through `Dashboard.handle` (connect, bounded queries,
render: what a browser waits for, minus the socket). Prints the median time per page as
``dashboard_<page>_ms`` and per live update as ``dashboard_live_<page>_ms``, and the sidecar's
history readings (the first looks back 24 hours) as ``dashboard_history_*_ms``.

Rows: ids in creation order one second apart (the newest is now), each started a second
after it was due and finished a second later; 1% failed (``error <i>``), 1% cancelled, 3%
pending, 0.01% running (on four workers of one supervisor), the rest succeeded; queues q0..q4,
keys k0..k19; arguments ``{"n": i}``.

    python benchmarks/dashboard.py --database postgresql://postgres@127.0.0.1/test
"""
from __future__ import annotations

import html
import re
import statistics
import time
from collections.abc import Callable
from urllib.parse import parse_qsl

from common import emit, fresh_table, parser

from gta_core.dashboard.app import Dashboard, Request
from gta_core.runtime import Runtime

CHUNK = 100_000
STATUS = ("CASE WHEN mod(i, 10000) = 5 THEN 'running' WHEN mod(i, 100) = 0 THEN 'failed' "
          "WHEN mod(i, 100) = 1 THEN 'cancelled' WHEN mod(i, 100) BETWEEN 2 AND 4 THEN 'pending' ELSE 'succeeded' END")
FILL = ("INSERT INTO {t} (\"key\", queue, status, priority, args, run_at, attempts, max_attempts, created_at, "
        "updated_at, started_at, finished_at, lease_owner, last_error) "
        "SELECT 'k' || mod(i, 20), 'q' || mod(i, 5), {status}, 0, '{{\"n\":' || i || '}}', {at}, 1, 3, {at}, {at}, "
        "CASE WHEN mod(i, 100) BETWEEN 2 AND 4 AND mod(i, 10000) <> 5 THEN NULL ELSE {at} + INTERVAL '1 second' END, "
        "CASE WHEN (mod(i, 100) BETWEEN 2 AND 4) OR mod(i, 10000) = 5 THEN NULL ELSE {at} + INTERVAL '2 seconds' END, "
        "CASE WHEN mod(i, 10000) = 5 THEN 'bench-host:4242.' || mod(i, 4) || ':token' END, "
        "CASE WHEN mod(i, 100) = 0 THEN 'ValueError: error ' || i || chr(10) || chr(10) || 'Traceback …' END "
        "FROM generate_series({first}, {last}) AS s(i)")
PAGES = {
    "first_page": "/tasks",
    "failed": "/tasks?status=failed",
    "failed_in_queue": "/tasks?status=failed&queue=q0",
    "key_and_status": "/tasks?status=succeeded&key=k7",
    "page_deep": "/tasks?before=500000",
    "last_hour": "/tasks?since=1h",
    "error_text": "/tasks?error=error+99",
    "argument": "/tasks?args=n%3D777777",
    "bulk_confirm": "/tasks/bulk?action=retry&status=failed&queue=q0",
    "task": "/tasks/777777",
    "overview": "/",
    "queues": "/queues",
    "queue": "/queue?name=q0",
    "workers": "/workers",
}
LIVE = {
    "overview": "/live/",
    "queues": "/live/queues",
    "queue": "/live/queue?name=q0",
    "workers": "/live/workers",
    "task": "/live/tasks/777777",
    "first_page": None,  # the list's: its ids, found by a first view
}


def fill(runtime: Runtime, rows: int) -> None:
    db, table = runtime.db, runtime.settings.table
    at = f"((statement_timestamp() AT TIME ZONE 'UTC') - ({rows} - i) * INTERVAL '1 second' - INTERVAL '3 seconds')"
    for first in range(1, rows + 1, CHUNK):
        with db.atomic():
            db.execute_sql(FILL.format(t=table, status=STATUS, at=at, first=first, last=min(rows, first + CHUNK - 1)))
    db.execute_sql(f"ANALYZE {table}")


def request(url: str) -> Request:
    path, _, query = url.partition("?")
    return Request("GET", path, dict(parse_qsl(query)), {"Host": "127.0.0.1"})


def timed(action: Callable[[], object]) -> float:
    begun = time.perf_counter()
    action()
    return time.perf_counter() - begun


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
        emit("dashboard_history_first_reading_ms", 1000 * timed(dashboard.history.tick), "ms")
        readings = [timed(dashboard.history.tick) for _ in range(args.rounds)]
        emit("dashboard_history_reading_ms", 1000 * statistics.median(readings), "ms")
        listed = re.search(r'data-live="([^"]+)"', dashboard.handle(request("/tasks")).body.decode())
        assert listed is not None
        live = {name: url or html.unescape(listed[1]) for name, url in LIVE.items()}
        timings: dict[str, list[float]] = {name: [] for name in [*PAGES, *(f"live_{name}" for name in live)]}
        for _ in range(args.rounds):  # every page in each round: a noisy neighbour slows all alike
            for name, url in [*PAGES.items(), *((f"live_{name}", url) for name, url in live.items())]:
                dashboard.queue_state.forget()  # each as the first viewer's: the queues read afresh
                begun = time.perf_counter()
                response = dashboard.handle(request(url))
                timings[name].append(time.perf_counter() - begun)
                if response.status != 200:
                    raise SystemExit(f"{url}: HTTP {response.status}: {response.body[:300]!r}")
        for name, samples in timings.items():
            emit(f"dashboard_{name}_ms", 1000 * statistics.median(samples), "ms")


if __name__ == "__main__":
    main()
