"""The private prometheus_client multiprocess directory of one supervisor.

prometheus_client chooses between in-memory values and per-process mmap files when it is
first imported, by looking at ``PROMETHEUS_MULTIPROC_DIR``. The supervisor therefore creates
a fresh directory and exports the variable before anything imports prometheus_client, and
every process it spawns inherits it. Each process writes ``<type>_<pid>.db``; the sidecar
merges them all on every scrape.

A dead worker's counters must keep counting (totals never drop when a worker is replaced),
but a file per dead process would make every scrape slower for the supervisor's whole life
(``--max-tasks-per-worker`` recycles workers all the time). So `retire` folds a dead
process's counter, histogram and summary files into ``<type>_archive.db``. The sidecar reads
under a shared lock and retiring takes it exclusively, so no scrape sees a value twice or
not at all.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "gta-metrics-"
LOCK_FILE = "collect.lock"
ARCHIVED_TYPES = ("counter", "histogram", "summary")  # additive values; gauges are not
HEADER = 8  # bytes; prometheus_client creates a file empty and sizes it a moment later


@dataclasses.dataclass(frozen=True)
class MultiprocDir:
    """The prometheus_client multiprocess directory one supervisor's processes share."""

    path: Path

    @classmethod
    def create(cls) -> MultiprocDir:
        """A new, empty directory (also removing those left behind by supervisors that were killed)."""
        remove_stale()
        path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
        (path / LOCK_FILE).touch()
        return cls(path)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    @contextlib.contextmanager
    def reading(self) -> Iterator[list[str]]:
        """The value files to read, while `retire` is held off.

        Files still empty are left out: a process is creating them right now (or was killed
        while it did, prometheus/client_python#1199), and they hold nothing yet.
        """
        with open(self.path / LOCK_FILE, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            yield [str(path) for path in self.path.glob("*.db") if _size(path) >= HEADER]

    def retire(self, pid: int) -> bool:
        """Forget a dead process's live gauges and fold its additive values into the archive.

        Returns False, changing nothing, while a scrape is reading: try again a moment later.
        """
        from prometheus_client import multiprocess
        from prometheus_client.mmap_dict import MmapedDict

        with open(self.path / LOCK_FILE, "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            multiprocess.mark_process_dead(pid, str(self.path))
            for kind in ARCHIVED_TYPES:
                dead = self.path / f"{kind}_{pid}.db"
                if not dead.exists():
                    continue
                if _size(dead) < HEADER:  # killed while creating it: nothing to keep
                    dead.unlink()
                    continue
                archive = MmapedDict(str(self.path / f"{kind}_archive.db"))
                try:
                    for key, value, _timestamp, _position in MmapedDict.read_all_values_from_file(str(dead)):
                        total, _ = archive.read_value(key)
                        archive.write_value(key, total + value, 0.0)
                finally:
                    archive.close()
                dead.unlink()
        return True


def remove_stale(quiet_for: float = 60.0) -> None:
    """Remove directories of supervisors that died without cleaning up (SIGKILL, power loss).

    Only ours, only when their pid is gone, and only when untouched for ``quiet_for`` seconds:
    a live supervisor rewrites its status file every second, so a supervisor in another pid
    namespace sharing this /tmp keeps its directory.
    """
    pattern = re.compile(rf"^{re.escape(PREFIX)}(\d+)-")
    for entry in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        match = pattern.match(entry.name)
        try:
            info = entry.stat()
        except OSError:
            continue
        quiet = time.time() - info.st_mtime > quiet_for
        if match and entry.is_dir() and info.st_uid == os.getuid() and quiet and not _alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
