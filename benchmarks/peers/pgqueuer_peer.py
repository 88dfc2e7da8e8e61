"""pgqueuer on PostgreSQL over asyncpg: tables and NOTIFY channel of its own through $PGQUEUER_PREFIX.

Each worker process runs ``PgQueuer.run`` with $BENCH_PGQUEUER_BATCH jobs per dequeue (compare.py's
``--pgqueuer-batch``; pgqueuer's default is 10), and at most $BENCH_PGQUEUER_CONCURRENCY jobs at once
(unset: pgqueuer's default, no limit). With $BENCH_IO_SLEEP set (the io_bound workload) each job first
awaits that many seconds.
"""
from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Coroutine, Sequence
from typing import Any

import asyncpg
from pgqueuer import Job, PgQueuer, Queries
from pgqueuer.domain.settings import db_settings

from benchmarks.peers import ledger
from benchmarks.peers.base import Peer, unique

PREFIX = "PGQUEUER_PREFIX"
BATCH = int(os.environ.get("BENCH_PGQUEUER_BATCH", "10"))
CONCURRENCY = int(os.environ.get("BENCH_PGQUEUER_CONCURRENCY", "0")) or None
IO_SLEEP = float(os.environ.get("BENCH_IO_SLEEP", "0"))


async def noop(job: Job) -> None:
    if IO_SLEEP:
        await asyncio.sleep(IO_SLEEP)
    ledger.record(int(job.payload or b"0"))


class PgqueuerPeer(Peer):
    name = "pgqueuer"
    backend = "postgresql"
    batch = True
    async_handlers = True
    module = "pgqueuer_peer"

    def install(self) -> None:
        self.prefix = unique("bench_cmp_pgq") + "_"
        os.environ[PREFIX] = self.prefix
        db_settings.cache_clear()  # pgqueuer reads PGQUEUER_* once per process
        self.loop = asyncio.new_event_loop()
        self.conn = self.run(asyncpg.connect(self.settings.database))
        self.queries = Queries.from_asyncpg_connection(self.conn)
        self.run(self.queries.install())

    def uninstall(self) -> None:
        try:
            self.run(self.queries.uninstall())
            self.run(self.conn.close())
        finally:
            self.loop.close()
            del os.environ[PREFIX]
            db_settings.cache_clear()

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coroutine)

    def submit_each(self, numbers: Sequence[int]) -> None:
        async def each() -> None:
            for number in numbers:
                await self.queries.enqueue("noop", b"%d" % number)
        self.run(each())

    def submit_batches(self, numbers: Sequence[int], size: int) -> None:
        async def batches() -> None:
            for at in range(0, len(numbers), size):
                chunk = numbers[at:at + size]
                await self.queries.enqueue(["noop"] * len(chunk), [b"%d" % n for n in chunk], [0] * len(chunk))
        self.run(batches())

    def worker_env(self) -> dict[str, str]:
        return {"BENCH_DATABASE": self.settings.database, PREFIX: self.prefix}


PEER = PgqueuerPeer


async def work(database: str) -> None:
    """A worker: dequeue and run ``noop`` jobs until SIGTERM."""
    conn = await asyncpg.connect(database)
    pgq = PgQueuer.from_asyncpg_connection(conn)
    pgq.entrypoint("noop")(noop)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, pgq.shutdown.set)
    try:
        await pgq.run(batch_size=BATCH, max_concurrent_tasks=CONCURRENCY)
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(work(os.environ["BENCH_DATABASE"]))
