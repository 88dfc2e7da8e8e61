"""The drain, submit and latency workloads of benchmarks/drain.py, submit.py and latency.py, run on a peer.

Completions are counted in the ledger the peer's no-op handler writes (see ledger.py), so a lost or
duplicated task shows up whatever the peer's own bookkeeping says.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.peers import ledger
from benchmarks.peers.base import Peer, last_line, unique

BATCH = 1000
STALL = 60.0  # seconds without a completion after which a drain gives up
WARM_UP = 900_000_000  # task numbers of the untimed tasks that let latency's workers boot


class Failed(Exception):
    """The workload produced no trustworthy figure; the message says why (``lost=X dup=Y`` for a drain)."""


def files(peer: Peer, workload: str) -> tuple[str, Path]:
    """A fresh ledger path and the peer's worker log for ``workload``."""
    scratch = peer.settings.scratch
    return str(scratch / f"{unique(f'{peer.name}_{workload}')}.ledger"), scratch / f"{peer.name}-{workload}.log"


def progressing(path: str, stall: float) -> Callable[[], bool]:
    """False once the ledger has not grown for ``stall`` seconds."""
    last = [ledger.size(path), time.monotonic()]

    def check() -> bool:
        size = ledger.size(path)
        if size != last[0]:
            last[:] = [size, time.monotonic()]
        return time.monotonic() - last[1] < stall
    return check


def wait(condition: Callable[[], bool], timeout: float, alive: Callable[[], bool] = lambda: True) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def drain(peer: Peer, tasks: int, timeout: float, extra: dict[str, str] | None = None,
          workload: str = "drain") -> float:
    """Tasks/s from starting the workers to the last of ``tasks`` pre-submitted no-ops starting to run
    (with ``extra`` in the workers' environment: the io_bound workload's sleep and concurrency)."""
    path, log = files(peer, workload)
    with peer.installed():
        if peer.batch:
            peer.submit_batches(range(tasks), BATCH)
        else:
            peer.submit_each(range(tasks))
        start = time.perf_counter()
        with peer.workers(path, log, extra) as processes:
            moving = progressing(path, STALL)
            done = wait(lambda: ledger.size(path) >= tasks and len(ledger.read(path)[0]) >= tasks, timeout,
                        alive=lambda: moving() and any(p.poll() is None for p in processes))
            elapsed = time.perf_counter() - start
    runs, _ = ledger.read(path)  # read after the workers stopped: runs during shutdown count too
    lost = sum(1 for n in range(tasks) if n not in runs)
    dup = sum(count - 1 for count in runs.values())
    if lost or dup or not done:
        raise Failed(f"lost={lost} dup={dup}" + ("" if done else f" (after {elapsed:.0f} s: {last_line(log)})"))
    return tasks / elapsed


def io_bound(peer: Peer, tasks: int, timeout: float, sleep: float, concurrency: int) -> float:
    """`drain` of tasks that each await ``sleep`` seconds (then record), up to ``concurrency`` at once
    per worker: the peer's own concurrency knob set to GTA's ``--concurrency`` (pgqueuer wants at most
    half of it per dequeue); ``concurrency`` 0 leaves the peers at their defaults (procrastinate 1 job
    at once, pgqueuer 10 per dequeue and no limit)."""
    extra = {"BENCH_IO_SLEEP": str(sleep)}
    if concurrency:
        extra.update({"BENCH_PROCRASTINATE_CONCURRENCY": str(concurrency),
                      "BENCH_PGQUEUER_CONCURRENCY": str(concurrency),
                      "BENCH_PGQUEUER_BATCH": str(max(1, concurrency // 2))})
    else:
        extra.update({"BENCH_PROCRASTINATE_CONCURRENCY": "1", "BENCH_PGQUEUER_CONCURRENCY": "0",
                      "BENCH_PGQUEUER_BATCH": "10"})
    return drain(peer, tasks, timeout, extra, "io_bound")


def submit(peer: Peer, single: int, batched: int) -> dict[str, float]:
    """Tasks/s submitting one per call, and (where the peer has a batch API) in batches of 1,000."""
    figures: dict[str, float] = {}
    with peer.installed():
        start = time.perf_counter()
        peer.submit_each(range(single))
        figures["submit_single"] = single / (time.perf_counter() - start)
        if peer.batch and batched >= BATCH:
            count = batched // BATCH * BATCH
            start = time.perf_counter()
            peer.submit_batches(range(single, single + count), BATCH)
            figures["submit_many_1000"] = count / (time.perf_counter() - start)
    return figures


def latency(peer: Peer, tasks: int, gap: float) -> dict[str, float]:
    """Submit-return → handler-start ms, one task every ``gap`` seconds into idle running workers."""
    path, log = files(peer, "latency")
    committed: dict[int, float] = {}
    warm_up = range(WARM_UP, WARM_UP + 2 * peer.settings.workers)
    with peer.installed(), peer.workers(path, log) as processes:
        alive = lambda: any(p.poll() is None for p in processes)  # noqa: E731
        for number in warm_up:
            peer.submit_each([number])
            time.sleep(0.05)
        if not wait(lambda: ledger.size(path) >= len(warm_up), 60, alive):
            raise Failed(f"workers did not start: {last_line(log)}")
        time.sleep(1)  # idle again
        for number in range(tasks):
            peer.submit_each([number])
            committed[number] = time.time()
            time.sleep(gap)
        wait(lambda: ledger.size(path) >= len(warm_up) + tasks, 60, alive)
    _, started = ledger.read(path)
    latencies = sorted((started[n] - committed[n]) * 1000 for n in committed if n in started)
    if len(latencies) != tasks:
        raise Failed(f"{len(latencies)} of {tasks} tasks started")
    quantiles = statistics.quantiles(latencies, n=100)
    return {"latency_p50": quantiles[49], "latency_p95": quantiles[94], "latency_p99": quantiles[98]}
