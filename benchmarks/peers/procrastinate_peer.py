"""procrastinate on PostgreSQL: a schema of its own (via search_path) and a queue of its own.

Each worker process runs ``App.run_worker`` on that queue with $BENCH_PROCRASTINATE_CONCURRENCY jobs at once
(compare.py's ``--procrastinate-concurrency``; procrastinate's default is 1). With $BENCH_IO_SLEEP set (the
io_bound workload) each job first awaits that many seconds.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

import procrastinate
import psycopg
from procrastinate.types import JSONDict

from benchmarks.peers import ledger
from benchmarks.peers.base import Peer, unique

CONCURRENCY = int(os.environ.get("BENCH_PROCRASTINATE_CONCURRENCY", "1"))
IO_SLEEP = float(os.environ.get("BENCH_IO_SLEEP", "0"))


async def noop(number: int) -> None:
    if IO_SLEEP:
        await asyncio.sleep(IO_SLEEP)
    ledger.record(number)


def make_app(database: str, schema: str) -> procrastinate.App:
    """The app on ``schema``; its one task ``noop`` goes to the queue named like the schema."""
    connector = procrastinate.PsycopgConnector(conninfo=database, kwargs={"options": f"-c search_path={schema}"})
    app = procrastinate.App(connector=connector)
    app.task(name="noop", queue=schema)(noop)
    return app


class ProcrastinatePeer(Peer):
    name = "procrastinate"
    backend = "postgresql"
    batch = True
    async_handlers = True
    module = "procrastinate_peer"

    def install(self) -> None:
        self.schema = unique("bench_cmp_procrastinate")
        with psycopg.connect(self.settings.database, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {self.schema}")
        self.app = make_app(self.settings.database, self.schema).open()  # used synchronously
        self.app.schema_manager.apply_schema()
        self.task = self.app.tasks["noop"]

    def uninstall(self) -> None:
        self.app.close()
        with psycopg.connect(self.settings.database, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")

    def submit_each(self, numbers: Sequence[int]) -> None:
        for number in numbers:
            self.task.defer(number=number)

    def submit_batches(self, numbers: Sequence[int], size: int) -> None:
        for at in range(0, len(numbers), size):
            jobs: list[JSONDict] = [{"number": n} for n in numbers[at:at + size]]
            self.task.batch_defer(*jobs)

    def worker_env(self) -> dict[str, str]:
        return {"BENCH_DATABASE": self.settings.database, "BENCH_SCHEMA": self.schema}


PEER = ProcrastinatePeer

if __name__ == "__main__":  # a worker process; stops gracefully on SIGTERM
    from benchmarks.peers import procrastinate_peer  # the app's module, not __main__, as procrastinate wants

    schema = os.environ["BENCH_SCHEMA"]
    app = procrastinate_peer.make_app(os.environ["BENCH_DATABASE"], schema)
    app.run_worker(queues=[schema], concurrency=procrastinate_peer.CONCURRENCY)
