"""Idle load: statements per second an idle supervisor sends to the database.

Counts server-side statements over a quiet window (PostgreSQL: transactions in
pg_stat_database; MariaDB/MySQL: the global Questions counter), minus this script's own
two readings. Run it on a quiet server: other clients' statements are counted too.

    python benchmarks/idle.py --database postgresql://postgres@127.0.0.1/test --workers 2
"""
from __future__ import annotations

import time

from common import emit, fresh_table, parser, supervisor


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seconds", type=float, default=20.0)
    args = p.parse_args()
    with fresh_table(args.database) as runtime:
        dialect = runtime.store.dialect
        if dialect == "sqlite":
            print("idle_queries SKIPPED sqlite keeps no server-side statement counter")
            return
        if dialect == "postgres":
            query = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        else:
            query = "SHOW GLOBAL STATUS LIKE 'Questions'"

        def counter() -> int:
            row = runtime.db.execute_sql(query).fetchone()
            return int(row[-1])
        with supervisor("--workers", str(args.workers), "--no-metrics"):
            time.sleep(5)  # boot, first polls
            if dialect == "postgres":
                time.sleep(0.6)  # pg_stat counters are flushed by backends at most every 500 ms
            before = counter()
            time.sleep(args.seconds)
            if dialect == "postgres":
                time.sleep(0.6)
            after = counter()
        emit("idle_queries", (after - before - 1) / args.seconds, "queries/s")


if __name__ == "__main__":
    main()
