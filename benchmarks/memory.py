"""Peak resident memory (VmHWM) of the supervisor, each worker and the metrics sidecar while draining.

Prints ``peak_rss_worker_N`` for each worker process (in start order) and the maximum per role.

    python benchmarks/memory.py --database sqlite:///bench.db --tasks 20000 --workers 2
"""
from __future__ import annotations

from common import emit, fresh_table, parser, supervisor, wait_until

from gta_core import TaskRequest, submit_many


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(part) for part in handle.read().split()]
    except FileNotFoundError:
        return []


def _status(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as handle:
            return dict(line.split(":", 1) for line in handle if ":" in line)
    except FileNotFoundError:
        return {}


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return ""


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--tasks", type=int, default=20000)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    with fresh_table(args.database) as runtime:
        store = runtime.store
        with runtime.db.atomic() as tx:
            submit_many(tx, [TaskRequest("bench_noop")] * args.tasks)
        with supervisor("--workers", str(args.workers)) as process:
            peaks: dict[int, tuple[str, int]] = {}

            def sample() -> bool:
                for pid in [process.pid, *_children(process.pid)]:
                    status = _status(pid)
                    if "VmHWM" not in status:
                        continue
                    command = _cmdline(pid)
                    role = ("supervisor" if pid == process.pid else "worker" if "spawn_main" in command
                            else "sidecar" if "metrics" in command else "helper")
                    peaks[pid] = (role, int(status["VmHWM"].split()[0]))
                return store.counts().get(("default", "succeeded"), 0) >= args.tasks
            wait_until(sample, timeout=600, interval=0.2)
        for role in ("supervisor", "worker", "sidecar"):
            figures = [kib for _, (name, kib) in sorted(peaks.items()) if name == role]
            if role == "worker":  # each worker process (replacements included), in start order
                for number, kib in enumerate(figures, 1):
                    emit(f"peak_rss_worker_{number}", kib / 1024, "MB")
            if figures:
                emit(f"peak_rss_{role}_max", max(figures) / 1024, "MB")


if __name__ == "__main__":
    main()
