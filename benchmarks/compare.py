"""Compare: GTA's drain, submit and latency figures beside its peers', with our ratio, in one run.

GTA runs the code of drain.py, submit.py and latency.py on PostgreSQL (``gta_*``) and on a SQLite file
(``gta_sqlite_*``); procrastinate and pgqueuer run on the same PostgreSQL database (a schema or table
prefix of their own, dropped afterwards), huey on a SQLite file, Celery on Redis (``--redis``, whose db
number is flushed before and after). Peers come from the ``bench`` extra: pip install -e '.[bench]'.
A ratio above 1 means GTA is better (more tasks/s, or fewer ms).

    python benchmarks/compare.py                                  # defaults: about 7 minutes
    python benchmarks/compare.py --tasks 2000 --latency-tasks 100 --peers pgqueuer huey
    python benchmarks/compare.py --tasks 0 --single 0 --latency-tasks 0 --peers pgqueuer procrastinate \
        --no-gta-sqlite                                           # the io_bound workload alone
    python benchmarks/compare.py --drain-runs 3 --rounds 3        # medians of three rounds

``--rounds N`` runs every system N times, every other round in the reverse order, and ends with
``median_<figure>`` lines: each figure's median, and each ratio's median over the rounds' own
ratios (a ratio is taken within a round, between runs minutes apart). One round's ratio moves by
a fifth between runs of the same commit on this machine.

io_bound: ``--io-tasks`` (10,000) ``async def`` tasks that each await ``--io-sleep`` (20 ms), up to
``--concurrency`` (100) at once per worker, on GTA and on the asyncio peers (pgqueuer, procrastinate).
"""
from __future__ import annotations

import argparse
import importlib
import socket
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from common import Failed, emit
from drain import drain
from io_bound import io_drain
from latency import latency
from submit import submit_rates

from benchmarks.peers import workloads
from benchmarks.peers.base import Peer, Settings

PEERS = {"procrastinate": "procrastinate_peer", "pgqueuer": "pgqueuer_peer", "huey": "huey_peer",
         "celery": "celery_peer"}
Figures = dict[str, float]
Workload = tuple[str, Callable[[], Figures]]


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text}"[:300]


def run(system: str, work: list[Workload], counts: dict[str, int]) -> Figures:
    """Run each workload, print its figures as ``<system>_<figure>``; failures print and the run goes on."""
    figures: Figures = {}
    for label, workload in work:
        if not counts[label]:
            continue
        try:
            result = workload()
        except (Failed, workloads.Failed) as failure:
            print(f"{system} {label} FAILED {failure}", flush=True)
            continue
        except Exception as error:
            print(f"{system} FAILED: {label}: {one_line(error)}", flush=True)
            continue
        for figure, value in result.items():
            emit(f"{system}_{figure}", value, unit(figure))
        figures.update(result)
    return figures


def unit(name: str) -> str:
    """What a figure (``latency_p99``, ``gta_drain_w2``) or a ratio is counted in."""
    return "x" if name.startswith("ratio") else "ms" if "latency" in name else "tasks/s"


def median_of(runs: int, measure: Callable[[], float]) -> float:
    """The median of ``runs`` measurements: one drain of a few seconds swings by a fifth from run
    to run on this machine, for every system."""
    return statistics.median(measure() for _ in range(runs))


def gta(database: str, args: argparse.Namespace) -> list[Workload]:
    return [("drain", lambda: {f"drain_w{args.workers}": median_of(
                args.drain_runs, lambda: drain(database, args.tasks, args.workers))}),
            ("submit", lambda: gta_submit(database, args)),
            ("latency", lambda: latency(database, args.latency_tasks, args.gap, args.workers)),
            ("io_bound", lambda: {f"io_bound_w{args.workers}": median_of(
                args.drain_runs, lambda: io_drain(database, args.io_tasks, args.workers, args.concurrency,
                                                  args.io_sleep))})]


def gta_submit(database: str, args: argparse.Namespace) -> Figures:
    """submit.py's figures, the batch one from rows that differ: each peer's batch numbers its tasks."""
    rates = submit_rates(database, args.single, args.batched)
    rates["submit_many_1000"] = rates.pop("submit_many_1000_distinct")
    return rates


def peer_workloads(peer: Peer, args: argparse.Namespace) -> list[Workload]:
    return [("drain", lambda: {f"drain_w{args.workers}": median_of(
                args.drain_runs, lambda: workloads.drain(peer, args.tasks, args.timeout))}),
            ("submit", lambda: workloads.submit(peer, args.single, args.batched)),
            ("latency", lambda: workloads.latency(peer, args.latency_tasks, args.gap)),
            *([("io_bound", lambda: {f"io_bound_w{args.workers}": median_of(
                args.drain_runs, lambda: workloads.io_bound(peer, args.io_tasks, args.timeout, args.io_sleep,
                                                            peer_concurrency(args)))})] if peer.async_handlers else [])]


def peer_concurrency(args: argparse.Namespace) -> int:
    """The asyncio peers' jobs at once per worker in io_bound: GTA's, or 0 for their own defaults."""
    return args.concurrency if args.io_peer_concurrency is None else args.io_peer_concurrency


def load(name: str, settings: Settings) -> Peer | None:
    """The peer, or None after printing ``<name> FAILED: <reason>`` (not installed, Redis unreachable)."""
    try:
        peer: Peer = importlib.import_module(f"benchmarks.peers.{PEERS[name]}").PEER(settings)
        if peer.backend == "redis":
            url = urlsplit(settings.redis)
            socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379), timeout=2).close()
    except Exception as error:
        print(f"{name} FAILED: {one_line(error)}", flush=True)
        return None
    return peer


#: GTA's figures set against a peer figure of another name: a peer's enqueue call commits on its
#: own, as GTA's ``submit(db, ...)`` does outside a transaction (submit.py)
COUNTERPARTS = {"submit_single_own": "submit_single"}


def ratios(results: dict[str, Figures], backends: dict[str, str]) -> Figures:
    """``ratio_<figure>_vs_<peer>``, each peer against GTA on its own database (huey's SQLite against
    ``gta_sqlite``: ``ratio_sqlite_<figure>_vs_huey``), and ``ratio_<figure>_vs_best_peer``, the
    least of those: GTA's margin over whichever peer comes closest."""
    found: Figures = {}
    ours = results.get("gta", {})
    for figure in ours:
        lower = figure.startswith("latency")
        theirs = COUNTERPARTS.get(figure, figure)
        against: dict[str, tuple[str, float]] = {}
        for name in backends:
            same = results.get("gta_sqlite", {}) if backends[name] == "sqlite" else ours
            if theirs in results[name] and figure in same:
                gta_value, peer_value = same[figure], results[name][theirs]
                prefix = "ratio_sqlite" if same is not ours else "ratio"
                against[name] = (prefix, peer_value / gta_value if lower else gta_value / peer_value)
        if not against:
            continue
        found[f"ratio_{figure}_vs_best_peer"] = min(ratio for _, ratio in against.values())
        for name, (prefix, ratio) in against.items():
            found[f"{prefix}_{figure}_vs_{name}"] = ratio
    return found


def medians(rounds: list[Figures]) -> Figures:
    """Each figure's median over the rounds that produced it."""
    names = dict.fromkeys(name for figures in rounds for name in figures)
    return {name: statistics.median(figures[name] for figures in rounds if name in figures) for name in names}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database", default="postgresql://postgres@127.0.0.1/test", help="PostgreSQL URL")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/13", help="Redis URL; its db is flushed")
    p.add_argument("--peers", nargs="*", choices=list(PEERS), default=list(PEERS))
    p.add_argument("--gta", action=argparse.BooleanOptionalAction, default=True, help="run GTA on PostgreSQL")
    p.add_argument("--gta-sqlite", action=argparse.BooleanOptionalAction, default=True, help="and on SQLite")
    p.add_argument("--workers", type=int, default=2, help="worker processes per system")
    p.add_argument("--tasks", type=int, default=20000, help="tasks drained")
    p.add_argument("--drain-runs", type=int, default=1, help="drains per system; the figure is their median")
    p.add_argument("--rounds", type=int, default=1,
                   help="run every system this many times, every other round in the reverse order, and "
                        "print each figure's and each ratio's median over the rounds")
    p.add_argument("--single", type=int, default=2000, help="tasks submitted one per call")
    p.add_argument("--batched", type=int, default=50000, help="tasks submitted in batches of 1,000")
    p.add_argument("--latency-tasks", type=int, default=500)
    p.add_argument("--gap", type=float, default=0.02, help="seconds between latency tasks")
    p.add_argument("--io-tasks", type=int, default=10000, help="io_bound: tasks that each await --io-sleep")
    p.add_argument("--io-sleep", type=float, default=0.02, help="io_bound: seconds each task awaits")
    p.add_argument("--concurrency", type=int, default=100,
                   help="io_bound: async tasks at once per worker, for GTA and for the asyncio peers")
    p.add_argument("--io-peer-concurrency", type=int, default=None,
                   help="io_bound: the asyncio peers' jobs at once per worker instead (0: their defaults)")
    p.add_argument("--timeout", type=float, default=300, help="seconds a peer's drain may take")
    p.add_argument("--procrastinate-concurrency", type=int, default=1, help="jobs at once per worker (its default)")
    p.add_argument("--pgqueuer-batch", type=int, default=10, help="jobs per dequeue (its default)")
    args = p.parse_args()
    counts = {"drain": args.tasks, "submit": args.single, "latency": args.latency_tasks,
              "io_bound": args.io_tasks}  # 0 skips a workload
    with tempfile.TemporaryDirectory(prefix="gta-compare-") as scratch:
        systems: dict[str, list[Workload]] = {}
        backends: dict[str, str] = {}
        if args.gta:
            systems["gta"] = gta(args.database, args)
        if args.gta_sqlite:
            systems["gta_sqlite"] = gta(f"sqlite:///{scratch}/gta.db", args)
        tuning = {"BENCH_PROCRASTINATE_CONCURRENCY": str(args.procrastinate_concurrency),
                  "BENCH_PGQUEUER_BATCH": str(args.pgqueuer_batch)}
        settings = Settings(args.database, args.redis, args.workers, Path(scratch), tuning)
        for name in args.peers:
            peer = load(name, settings)
            if peer is not None:
                systems[name] = peer_workloads(peer, args)
                backends[name] = peer.backend
        figures: list[Figures] = []  # per round: every system's figures and this round's ratios
        for number in range(args.rounds):
            if args.rounds > 1:
                print(f"# round {number + 1} of {args.rounds}", flush=True)
            # every other round in the reverse order: a machine that drifts during a round
            # favours no system over all rounds
            order = list(systems) if number % 2 == 0 else list(reversed(systems))
            results = {name: run(name, systems[name], counts) for name in order}
            found = ratios(results, backends)
            for name, ratio in found.items():
                emit(name, ratio, unit(name))
            figures.append({**{f"{system}_{figure}": value for system, values in results.items()
                               for figure, value in values.items()}, **found})
        if args.rounds > 1:
            print(f"# medians over {args.rounds} rounds (each ratio: the median of the rounds' ratios)", flush=True)
            for name, value in medians(figures).items():
                emit(f"median_{name}", value, unit(name))


if __name__ == "__main__":
    main()
