"""Servers the tests run: a real Prometheus, a TCP proxy that can cut a database off, PgBouncer."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from .helpers import wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """(status, body) of a GET; connection errors are (0, b'')."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


class Prometheus:
    """``prometheus`` on 127.0.0.1, scraping one target every second, with its own storage."""

    def __init__(self, tmp_path: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        assert binary, "the prometheus server is not installed (scripts/test installs it: scripts/prerequisites.txt)"
        self.port = free_port()
        root = tmp_path / f"prometheus-{self.port}"
        root.mkdir()
        config = root / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: gta\n    static_configs:\n"
            f"      - targets: ['{target}']\n")
        self.log_path = root / "prometheus.log"
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={root / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: self.process.poll() is not None or http_get(f"{self.url}/-/ready", 2)[0] == 200,
                 what="prometheus to be ready")
        assert self.process.poll() is None, self.log_path.read_text()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query's result: (labels, value) per series."""
        status, body = http_get(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
        assert status == 200, (expr, status, body)
        reply: dict[str, Any] = json.loads(body)
        assert reply["status"] == "success", reply
        return [(series["metric"], float(series["value"][1])) for series in reply["data"]["result"]]

    def by(self, expr: str, label: str) -> dict[str, float]:
        """``{label value: value}`` of a query grouped by one label."""
        return {labels.get(label, ""): value for labels, value in self.query(expr)}

    def scalar(self, expr: str) -> float | None:
        """The value of a query with at most one series (None when it has none)."""
        result = self.query(expr)
        assert len(result) <= 1, (expr, result)
        return result[0][1] if result else None

    def names(self) -> set[str]:
        status, body = http_get(f"{self.url}/api/v1/label/__name__/values")
        assert status == 200, body
        return set(json.loads(body)["data"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a server; `stop` refuses new and cuts open connections."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            doomed, self._sockets = self._sockets, []
            listener, self._listener = self._listener, None
        for sock in [*doomed, *([listener] if listener else [])]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):  # one side ended: end the other too, waking its pump
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class PgBouncer:
    """``pgbouncer`` on 127.0.0.1 in transaction pooling mode, in front of a PostgreSQL server.

    Its configuration lives in ``tmp_path``; it trusts every user (the server behind it decides).
    As root (CI containers) it runs as ``nobody``, since it refuses to run as root; its log goes
    to a file this process opened, so no file needs to be writable by that user.
    """

    def __init__(self, tmp_path: Path, server_url: str, pool_size: int = 20) -> None:
        binary = shutil.which("pgbouncer") or next(
            (path for path in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if Path(path).exists()), None)
        assert binary, "pgbouncer is not installed (Debian package `pgbouncer`: apt-get install -y pgbouncer)"
        server = urllib.parse.urlsplit(server_url)
        self.server_url, self.port = server_url, free_port()
        root = tmp_path / f"pgbouncer-{self.port}"
        root.mkdir()
        (root / "users.txt").write_text(f'"{server.username or "postgres"}" ""\n')
        config = root / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"* = host={server.hostname or '127.0.0.1'} port={server.port or 5432}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {root / 'users.txt'}\n"
            f"pool_mode = transaction\ndefault_pool_size = {pool_size}\nmax_client_conn = 1000\n"
            # GTA sets statement_timeout through `options`, which pgbouncer 1.18 cannot pass on
            "ignore_startup_parameters = extra_float_digits,options\n")
        self.log_path = root / "pgbouncer.log"
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen([binary, *user, str(config)], stdout=log_file, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        wait_for(lambda: self.process.poll() is not None or "listening on 127.0.0.1" in self.log(),
                 what="pgbouncer to listen")
        assert self.process.poll() is None, self.log()

    @property
    def url(self) -> str:
        """The server URL with pgbouncer's address in place of the server's."""
        server = urllib.parse.urlsplit(self.server_url)
        netloc = f"{server.username or 'postgres'}@127.0.0.1:{self.port}"
        return urllib.parse.urlunsplit(server._replace(netloc=netloc))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
