"""Private PostgreSQL and MariaDB servers for the scenarios that restart or break a server.

The shared servers on 5432/3306 serve other sessions and CI at the same time: nothing here
ever touches them. Each private server lives in a temporary directory on a free
127.0.0.1 port, is started once per test session (about a second: no fsync, tiny buffers)
and is removed, processes and files, when the session ends.

A backend whose shared URL is not configured is disabled in this run, and so is its private
server. A backend that *is* enabled but whose server binaries are missing fails the test
(CI treats both backends as required): it never turns into a skip.
"""
from __future__ import annotations

import abc
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import peewee
import pytest

from gta_core.db.connect import open_database

from ..support.backends import only_on
from ..support.helpers import wait_for
from ..support.servers import free_port
from .network import Network

PG_BIN = Path("/usr/lib/postgresql/15/bin")
MARIADBD = Path("/usr/sbin/mariadbd")
MARIADB_INSTALL_DB = Path("/usr/bin/mariadb-install-db")
SERVER_BACKENDS = ("postgres", "mariadb")


def _run(args: list[str], what: str, timeout: float = 60.0) -> None:
    done = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, check=False)
    assert done.returncode == 0, f"{what} failed (exit {done.returncode}):\n{done.stdout.decode(errors='replace')}"


def _require(*binaries: Path) -> None:
    missing = [str(binary) for binary in binaries if not os.access(binary, os.X_OK)]
    if missing:
        pytest.fail(f"cannot start a private server: {', '.join(missing)} not installed "
                    "(the backend is enabled, so its chaos scenarios must run; scripts/test installs them: "
                    "scripts/prerequisites.txt)")


class PrivateServer(abc.ABC):
    """A database server of this test session's own: restart it, stop it, kill its sessions."""

    backend: str
    startup_seconds: float  # how long the first start took, initialisation included

    def __init__(self, network: Network | None = None) -> None:
        """On 127.0.0.1, or inside ``network``'s ``db`` namespace, listening on its addresses
        (`url` is then the test process's way in, `url_at` the hosts')."""
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix=f"gta-chaos-{self.backend}-"))
        self.enter = network.enter("db") if network else []
        self.host = network.db_root_address if network else "127.0.0.1"
        self.listen = "0.0.0.0" if network else "127.0.0.1"  # every address of its own namespace

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The GTA database URL of this server (``postgresql://`` or ``mysql://``)."""

    @abc.abstractmethod
    def start(self) -> None:
        """Start the server and wait until it accepts connections (no-op when it runs)."""

    @abc.abstractmethod
    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clean shutdown) or ``immediate`` (no shutdown checkpoint, a crash)."""

    @abc.abstractmethod
    def running(self) -> bool:
        """Whether the server process is alive."""

    @abc.abstractmethod
    def kill_connections(self) -> int:
        """End every client session from the server side, except the killer's own; how many."""

    def restart(self, mode: str = "immediate") -> None:
        self.stop(mode)
        self.start()

    def url_via(self, port: int) -> str:
        """This server's URL as reached through a proxy listening on ``port``."""
        return self.url.replace(f":{self.port}/", f":{port}/")

    def url_at(self, address: str) -> str:
        """This server's URL at another of its addresses."""
        return self.url.replace(f"@{self.host}:", f"@{address}:")

    def close(self) -> None:
        """Stop the server for good and delete its directory."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _admin(self) -> peewee.Database:
        db = open_database(self.url, statement_timeout=10)
        db.connect()
        return db

    def _wait_ready(self) -> None:
        def accepts() -> bool:
            try:
                self._admin().close()
                return True
            except peewee.DatabaseError:
                return False
        wait_for(accepts, 30, f"the private {self.backend} server to accept connections", interval=0.05)


class PrivatePostgres(PrivateServer):
    """PostgreSQL 15 under ``initdb`` + ``pg_ctl`` (as user postgres), trust auth, fsync off."""

    backend = "postgres"

    def __init__(self, network: Network | None = None) -> None:
        super().__init__(network)
        shutil.chown(self.root, "postgres")
        self.root.chmod(0o700)
        self.data = self.root / "data"
        started = time.monotonic()
        self._pg("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync",
                 "--no-instructions", "-E", "UTF8")
        if network:  # the hosts and the test process come from the network's addresses
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write(f"host all all {network.db_root_address.rsplit('.', 2)[0]}.0.0/16 trust\n")
        self.start()
        self.startup_seconds = time.monotonic() - started

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def _pg(self, tool: str, *args: str) -> None:
        _run([*self.enter, "runuser", "-u", "postgres", "--", str(PG_BIN / tool), *args], f"{tool} {' '.join(args)}")

    def start(self) -> None:
        if self.running():
            return
        # fsync=off survives a killed server (the OS keeps the writes); synchronous_commit=off
        # would not: an immediate restart then loses acknowledged commits
        options = (f"-p {self.port} -k {self.root} -c listen_addresses={self.listen} -c max_connections=60 "
                   "-c fsync=off -c full_page_writes=off -c shared_buffers=16MB")
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "30",
                 "-o", options, "start")
        self._wait_ready()

    def stop(self, mode: str = "fast") -> None:
        if self.running():
            self._pg("pg_ctl", "-D", str(self.data), "-w", "-t", "30", "-m", mode, "stop")

    def running(self) -> bool:
        pid_file = self.data / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill_connections(self) -> int:
        db = self._admin()
        try:
            rows = db.execute_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()").fetchall()
            return sum(1 for (killed,) in rows if killed)
        finally:
            db.close()


class PrivateMariaDB(PrivateServer):
    """``mariadbd`` on a fresh ``mariadb-install-db`` datadir; root without a password.

    MariaDB has no "immediate" shutdown mode: ``stop("immediate")`` is SIGKILL (InnoDB crash
    recovery on the next start), ``stop("fast")`` a clean SIGTERM shutdown.
    """

    backend = "mariadb"

    def __init__(self, network: Network | None = None) -> None:
        super().__init__(network)
        self.data = self.root / "data"
        self.process: subprocess.Popen[bytes] | None = None
        # root@localhost is the only account: in a network, clients come from other addresses
        self.grants = ["--skip-grant-tables"] if network else []
        started = time.monotonic()
        _run([str(MARIADB_INSTALL_DB), "--no-defaults", f"--datadir={self.data}", "--user=root",
              "--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"],
             "mariadb-install-db")
        self.start()
        db = self._admin(database="mysql")
        db.execute_sql("CREATE DATABASE IF NOT EXISTS test")
        db.close()
        self.startup_seconds = time.monotonic() - started

    @property
    def url(self) -> str:
        return f"mysql://root@{self.host}:{self.port}/test"

    def _admin(self, database: str = "test") -> peewee.Database:
        db = open_database(self.url.replace("/test", f"/{database}"), statement_timeout=10)
        db.connect()
        return db

    def _wait_ready(self) -> None:
        def accepts() -> bool:
            assert self.process is not None and self.process.poll() is None, \
                (self.root / "server.log").read_text(errors="replace")[-3000:]
            try:
                self._admin(database="mysql").close()
                return True
            except peewee.DatabaseError:
                return False
        wait_for(accepts, 30, "the private mariadb server to accept connections", interval=0.05)

    def start(self) -> None:
        if self.running():
            return
        # flush-log-at-trx-commit=2 writes the log to the OS at each commit (a SIGKILL loses
        # nothing); 0 would lose up to a second of acknowledged commits
        with open(self.root / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [*self.enter, str(MARIADBD), "--no-defaults", "--user=root", f"--datadir={self.data}",
                 f"--port={self.port}", f"--socket={self.root / 'mysqld.sock'}",
                 f"--pid-file={self.root / 'mysqld.pid'}", f"--bind-address={self.listen}", "--skip-name-resolve",
                 "--max-connections=80", "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M",
                 "--innodb-flush-log-at-trx-commit=2", "--skip-log-bin", *self.grants],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready()

    def stop(self, mode: str = "fast") -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if mode == "immediate" else signal.SIGTERM)
        self.process.wait(30)
        self.process = None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill_connections(self) -> int:
        db = self._admin()
        try:
            return end_sessions(db, "SELECT id FROM information_schema.processlist WHERE id <> CONNECTION_ID() "
                                    "AND command <> 'Daemon' AND user <> 'system user'", "KILL {}")
        finally:
            db.close()


def end_sessions(db: peewee.Database, select_sessions: str, end_session: str) -> int:
    """End each session ``select_sessions`` names with ``end_session`` (``{}``: its id); how
    many. One that ended on its own meanwhile is skipped."""
    ended = 0
    for (session,) in db.execute_sql(select_sessions).fetchall():
        try:
            db.execute_sql(end_session.format(int(session)))
            ended += 1
        except peewee.DatabaseError:
            pass
    return ended


_CLASSES: dict[str, type[PrivateServer]] = {"postgres": PrivatePostgres, "mariadb": PrivateMariaDB}
_BINARIES = {"postgres": (PG_BIN / "initdb", PG_BIN / "pg_ctl"), "mariadb": (MARIADBD, MARIADB_INSTALL_DB)}


def private_server(backend: str, network: Network | None = None) -> PrivateServer:
    """A new private server of ``backend`` (its binaries required), in ``network`` if given."""
    _require(*_BINARIES[backend])
    return _CLASSES[backend](network)


def server_params() -> list[object]:
    """``pytest.param`` per server backend; a disabled backend is skipped and says why."""
    return [only_on(name) for name in SERVER_BACKENDS]


class PrivateServers:
    """Starts each private server on first use and stops them all at the end of the session."""

    def __init__(self) -> None:
        self._servers: dict[str, PrivateServer] = {}

    def get(self, backend: str) -> PrivateServer:
        if backend not in self._servers:
            server = private_server(backend)
            self._servers[backend] = server
            print(f"\n[chaos] private {backend} server on 127.0.0.1:{server.port} "
                  f"started in {server.startup_seconds:.2f}s")
        server = self._servers[backend]
        server.start()  # a scenario that failed half-way may have left it stopped
        return server

    def close(self) -> None:
        for server in self._servers.values():
            server.close()
        self._servers.clear()


@pytest.fixture(scope="session")
def private_servers() -> Iterator[PrivateServers]:
    servers = PrivateServers()
    try:
        yield servers
    finally:
        servers.close()
