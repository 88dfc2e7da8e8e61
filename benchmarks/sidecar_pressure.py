"""The metrics sidecar under abuse: its memory and whether ``/metrics``, ``/healthz`` and the
dashboard keep answering while (1) one client sends a 200 MiB request body announced as
``Content-Length: -1`` and (2) 70 clients hold connections open without sending a request.

    python benchmarks/sidecar_pressure.py [--database URL] [--body-mib 200] [--idle 70] [--nofile N]

Prints the sidecar's resident memory before (``sidecar_rss_baseline``), its peak during each
(``sidecar_rss_peak_idle``, then ``sidecar_rss_peak_body``: VmHWM, reset between the two), its
threads and CPU use under the idle connections, and how long each endpoint took to answer during
each (``..._ms``; -1 when it did not answer within 10 s). ``--nofile N`` lowers the sidecar's
open-file limit to N first (the default limit of many hosts is 1,024), so that the idle
connections reach it.
"""
from __future__ import annotations

import os
import resource
import socket
import threading
import time
import urllib.request
from pathlib import Path

from common import emit, fresh_table, parser, supervisor, wait_until

TOKEN = "benchmark-dashboard-token-0123"
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def status_field(pid: int, name: str) -> int:
    """A number of ``/proc/PID/status`` (kB for memory)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise KeyError(name)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` (fields 14 and 15 of stat(5))."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sidecar_of(pid: int) -> int | None:
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        if b"gta_core.metrics.sidecar" in Path(f"/proc/{child}/cmdline").read_bytes():
            return int(child)
    return None


def answer_ms(url: str) -> float:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
    except urllib.error.HTTPError:
        pass  # an answer all the same (503 unhealthy, 400 refused)
    except OSError:
        return -1.0
    return (time.monotonic() - started) * 1000


def probe(base: str, label: str) -> None:
    for name, path in (("metrics", "/metrics"), ("healthz", "/healthz"), ("dashboard", "/")):
        emit(f"sidecar_{name}_during_{label}_ms", answer_ms(base + path), "ms")


def send_body(port: int, mib: int, done: threading.Event) -> None:
    """POST /signin with ``Content-Length: -1`` and ``mib`` MiB behind it, then read the answer."""
    chunk = b"x" * MIB
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(b"POST /signin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: -1\r\n\r\n")
            for _ in range(mib):
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)
            sock.recv(4096)
        except OSError:
            pass  # refused and closed early: the point
    done.set()


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--body-mib", type=int, default=200)
    p.add_argument("--idle", type=int, default=70)
    p.add_argument("--nofile", type=int, default=0, help="the sidecar's open-file limit (default: unchanged)")
    args = p.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    os.environ["GTA_DASHBOARD_TOKEN"] = TOKEN
    with fresh_table(args.database), supervisor("--workers", "1", "--metrics-bind", f"127.0.0.1:{port}") as process:
        assert wait_until(lambda: answer_ms(base + "/healthz") >= 0, 60), "the sidecar did not answer"
        pid = sidecar_of(process.pid)
        assert pid is not None
        if args.nofile:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (args.nofile, args.nofile))
        probe(base, "warmup")
        emit("sidecar_rss_baseline", status_field(pid, "VmRSS") / 1024, "MiB")

        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(args.idle)]
        time.sleep(0.5)
        emit("sidecar_threads_idle", status_field(pid, "Threads"), "threads")
        probe(base, "idle")
        before = cpu_seconds(pid)
        time.sleep(2)
        emit("sidecar_cpu_idle_share", (cpu_seconds(pid) - before) / 2, "cores")
        emit("sidecar_rss_peak_idle", status_field(pid, "VmHWM") / 1024, "MiB")
        for sock in idle:
            sock.close()

        time.sleep(1)
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        done = threading.Event()
        threading.Thread(target=send_body, args=(port, args.body_mib, done), daemon=True).start()
        time.sleep(0.5)
        probe(base, "body")
        done.wait(120)
        emit("sidecar_rss_peak_body", status_field(pid, "VmHWM") / 1024, "MiB")

if __name__ == "__main__":
    main()
