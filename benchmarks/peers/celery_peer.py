"""Celery on Redis: a dedicated db number (flushed before and after each workload) and a queue of its own.

One ``celery worker`` process with a prefork pool of ``--workers`` processes, no result backend, and
gossip, mingle and heartbeat off. Celery has no batch enqueue (a group publishes one message per task).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import redis
from celery import Celery

from benchmarks.peers import ledger
from benchmarks.peers.base import Peer, unique


def noop(number: int) -> None:
    ledger.record(number)


def make_app(broker: str, queue: str) -> tuple[Celery, Any]:
    """The app on ``broker`` and its one task, routed to ``queue``."""
    app = Celery("bench", broker=broker)
    app.conf.update(task_ignore_result=True, task_default_queue=queue, broker_connection_retry_on_startup=True)
    return app, app.task(name="bench.noop")(noop)


class CeleryPeer(Peer):
    name = "celery"
    backend = "redis"
    module = "celery_peer"

    def install(self) -> None:
        self.redis = redis.Redis.from_url(self.settings.redis)
        self.redis.flushdb()
        self.queue = unique("bench_cmp_celery")
        self.app, self.task = make_app(self.settings.redis, self.queue)

    def uninstall(self) -> None:
        self.app.close()
        self.redis.flushdb()
        self.redis.close()

    def submit_each(self, numbers: Sequence[int]) -> None:
        for number in numbers:
            self.task.delay(number)

    def worker_env(self) -> dict[str, str]:
        return {"BENCH_REDIS": self.settings.redis, "BENCH_QUEUE": self.queue,
                "BENCH_WORKERS": str(self.settings.workers)}

    def worker_commands(self) -> list[list[str]]:
        return super().worker_commands()[:1]  # one worker; its prefork pool has the processes


PEER = CeleryPeer

if __name__ == "__main__":  # SIGTERM is Celery's warm shutdown
    app, _ = make_app(os.environ["BENCH_REDIS"], os.environ["BENCH_QUEUE"])
    app.worker_main(["worker", "--pool", "prefork", "--concurrency", os.environ["BENCH_WORKERS"], "--loglevel",
                     "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"])
