"""What every peer offers the compare workloads, and the worker processes the script starts and stops."""
from __future__ import annotations

import abc
import contextlib
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from benchmarks.peers import ledger

ROOT = Path(__file__).resolve().parents[2]
STOP_TIMEOUT = 15.0  # seconds between SIGTERM and SIGKILL


@dataclass(frozen=True)
class Settings:
    database: str  # PostgreSQL URL
    redis: str  # Redis URL with a dedicated db number
    workers: int  # worker processes (or pool processes) per peer
    scratch: Path  # SQLite files, ledgers and worker logs of this run
    tuning: dict[str, str]  # peers' knobs (BENCH_<PEER>_<KNOB>), in every worker's environment


def unique(stem: str) -> str:
    """A fresh lower-case identifier for a schema, prefix, queue or file of this run."""
    return f"{stem}_{secrets.token_hex(4)}"


class Peer(abc.ABC):
    """A queue under test, installed fresh for each workload and removed afterwards."""

    name: ClassVar[str]
    backend: ClassVar[str]  # postgresql, sqlite or redis
    batch: ClassVar[bool] = False  # has a batch enqueue API
    async_handlers: ClassVar[bool] = False  # runs async handlers on an event loop (the io_bound workload)
    module: ClassVar[str]  # run as ``python -m benchmarks.peers.<module>`` for a worker

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @abc.abstractmethod
    def install(self) -> None:
        """Empty queue storage of this run's own (schema, table prefix, file or db) and a client."""

    @abc.abstractmethod
    def uninstall(self) -> None:
        """Close the client and drop everything ``install`` created."""

    @abc.abstractmethod
    def submit_each(self, numbers: Sequence[int]) -> None:
        """One no-op task per number, each in its own call (and transaction, where there is one)."""

    def submit_batches(self, numbers: Sequence[int], size: int) -> None:
        raise NotImplementedError(f"{self.name} has no batch enqueue API")

    @abc.abstractmethod
    def worker_env(self) -> dict[str, str]:
        """What a worker process needs to find this installation."""

    def worker_commands(self) -> list[list[str]]:
        """One worker process per configured worker; peers with their own pool override this."""
        return [[sys.executable, "-m", f"benchmarks.peers.{self.module}"]] * self.settings.workers

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        self.install()
        try:
            yield
        finally:
            self.uninstall()

    @contextlib.contextmanager
    def workers(self, ledger_path: str, log: Path,
                extra: dict[str, str] | None = None) -> Iterator[list[subprocess.Popen[bytes]]]:
        """Start the worker processes (each in its own process group), with ``extra`` in their
        environment; SIGTERM, then SIGKILL, on exit."""
        env = {**os.environ, **self.settings.tuning, **(extra or {}), **self.worker_env(), ledger.ENV: ledger_path,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        processes: list[subprocess.Popen[bytes]] = []
        with open(log, "ab") as out:
            try:
                for command in self.worker_commands():
                    processes.append(subprocess.Popen(command, env=env, cwd=ROOT, stdout=out,
                                                      stderr=subprocess.STDOUT, start_new_session=True))
                yield processes
            finally:
                for process in processes:
                    if process.poll() is None:
                        process.send_signal(signal.SIGTERM)
                for process in processes:
                    stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Wait for a SIGTERMed worker, SIGKILL it after STOP_TIMEOUT, then kill whatever of its group is left."""
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    with contextlib.suppress(ProcessLookupError):  # pool children (prefork, huey's workers) still alive
        os.killpg(process.pid, signal.SIGKILL)


def last_line(log: Path) -> str:
    """The last non-empty line a worker wrote, for a one-line failure reason."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()] if log.exists() else []
    return lines[-1].strip()[:200] if lines else "no output"
