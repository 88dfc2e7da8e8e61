"""huey on SQLite (a file of this run): one consumer process with ``--workers`` worker processes.

huey's consumer polls; it starts at 10 ms between polls (huey's default is 100 ms) and backs off to at most
1 s when idle, so the latency figures are huey at a low-latency setting. huey has no batch enqueue.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

from huey import SqliteHuey
from huey.api import TaskWrapper

from benchmarks.peers import ledger
from benchmarks.peers.base import Peer, unique


def noop(number: int) -> None:
    ledger.record(number)


def make_huey(filename: str) -> tuple[SqliteHuey, TaskWrapper]:
    """huey on ``filename`` and its one task (calling it enqueues)."""
    huey = SqliteHuey(name="bench", filename=filename)
    return huey, huey.task(name="noop")(noop)


class HueyPeer(Peer):
    name = "huey"
    backend = "sqlite"
    module = "huey_peer"

    def install(self) -> None:
        self.filename = str(self.settings.scratch / f"{unique('huey')}.db")
        self.huey, self.enqueue = make_huey(self.filename)

    def uninstall(self) -> None:
        self.huey.storage.close()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.filename + suffix):
                os.unlink(self.filename + suffix)

    def submit_each(self, numbers: Sequence[int]) -> None:
        for number in numbers:
            self.enqueue(number)

    def worker_env(self) -> dict[str, str]:
        return {"BENCH_HUEY_FILE": self.filename, "BENCH_WORKERS": str(self.settings.workers)}

    def worker_commands(self) -> list[list[str]]:
        return super().worker_commands()[:1]  # one consumer; it forks the workers


PEER = HueyPeer

if __name__ == "__main__":  # the consumer; SIGTERM stops it and its workers
    from benchmarks.peers import huey_peer  # huey names tasks by module: not __main__, as the submitter does

    huey, _ = huey_peer.make_huey(os.environ["BENCH_HUEY_FILE"])
    consumer = huey.create_consumer(workers=int(os.environ["BENCH_WORKERS"]), worker_type="process",
                                    periodic=False, initial_delay=0.01, max_delay=1.0)
    consumer.run()
