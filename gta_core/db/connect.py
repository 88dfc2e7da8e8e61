"""Opening the task database: a peewee Database per URL, with the connection behaviour GTA
relies on (timeouts, a new connection for a thread whose old one died, on PostgreSQL deferred
``BEGIN`` and prepared hot statements). Telling failures apart is `db.driver_errors`'; retrying them,
`db.transactions`'; PostgreSQL's reply watchdog, `db.read_timeout`'s.

Each process (and each thread, through peewee's thread-local connections) opens its own
connection; nothing opened here ever crosses a fork. Connections carry timeouts so that a
dead server or a half-open socket turns into an error instead of a hang.
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import math
import os
import re
import select
import socket
import weakref
from collections.abc import Sequence
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import peewee

from ..config import DIALECTS, redact_url
from ..errors import ConfigError, DatabaseUnavailable, SchemaError
from . import sqlite_ids
from .driver_errors import driver_error, session_not_ours
from .drivers import require_driver
from .read_timeout import guarded_cursor

log = logging.getLogger("gta.database")

T = TypeVar("T")

#: a connect that had no answer to its SYN and one retransmission (the kernel resends at 1 s,
#: then 3 s) gives up, and the next attempt sends a fresh SYN: a host whose network comes back
#: reconnects within about a second instead of waiting out the retransmission backoff (2 s is
#: also libpq's smallest connect_timeout)
CONNECT_TIMEOUT = 2
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: how long past its statement_timeout a PostgreSQL statement may go unanswered before its
#: connection is cut (the server cancels it at statement_timeout when it can answer at all)
REPLY_GRACE = 2.0


def utc_text(moment: dt.datetime) -> str:
    """SQLite's timestamp format: naive UTC, microseconds, sorts as text (the year always has
    four digits: strftime's %Y drops the zeros of years before 1000, and '999-…' sorts last)."""
    return moment.replace(tzinfo=None).isoformat(" ", "microseconds")


def _sqlite_now() -> str:
    return utc_text(dt.datetime.now(dt.timezone.utc))


def _sqlite_now_plus(seconds: float) -> str:
    return utc_text(dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds))


def dialect_of(db: peewee.Database) -> str:
    """``sqlite``, ``postgres`` or ``mysql`` for any peewee Database (subclasses included)."""
    if isinstance(db, peewee.SqliteDatabase):
        return "sqlite"
    if isinstance(db, peewee.PostgresqlDatabase):
        return "postgres"
    if isinstance(db, peewee.MySQLDatabase):
        return "mysql"
    raise ConfigError("database", f"{type(db).__name__} is not SQLite, PostgreSQL or MySQL/MariaDB")


def install_sqlite_functions(db: peewee.Database) -> None:
    """Give a SQLite database the functions GTA's SQL uses (idempotent): the clock, and the
    mark of the ids handed out (`sqlite_ids`)."""
    if isinstance(db, peewee.SqliteDatabase) and "gta_now" not in getattr(db, "_functions", {}):
        # Deterministic: SQLite then evaluates a call with constant arguments once per statement,
        # not once per row (a statement's own clock, as statement_timestamp() on PostgreSQL).
        db.register_function(_sqlite_now, "gta_now", 0, deterministic=True)
        db.register_function(_sqlite_now_plus, "gta_now_plus", 1, deterministic=True)
        db.register_function(sqlite_ids.floor, "gta_id_floor", 2)
        db.register_function(sqlite_ids.issued, "gta_id_issued", 3)


def open_database(url: str, statement_timeout: float = 60.0) -> peewee.Database:
    """A peewee Database for a GTA URL; no connection is opened yet."""
    parsed = urlparse(url)
    scheme = parsed.scheme
    dialect = DIALECTS.get(scheme)
    if dialect == "sqlite":
        path = sqlite_path(url)
        if not path:
            raise ConfigError("database_url", "sqlite URL needs a file, e.g. sqlite:///gta.db")
        db = peewee.SqliteDatabase(
            path,
            pragmas={"journal_mode": "wal", "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
                     "synchronous": "normal", "foreign_keys": 0},
            lock_type="IMMEDIATE",  # every write takes the lock up front: no deadlocked upgrades
            timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
        )
        install_sqlite_functions(db)
        return db
    name = parsed.path.lstrip("/")
    if not name:
        raise ConfigError("database_url", f"{scheme} URL needs a database name, e.g. {scheme}://host/test")
    common: dict[str, Any] = {"host": parsed.hostname or "127.0.0.1", "user": unquote(parsed.username or "")}
    if parsed.password:
        common["password"] = unquote(parsed.password)
    if dialect == "postgres":
        require_driver("postgres")
        if statement_timeout > 0:
            common["cursor_factory"] = guarded_cursor(statement_timeout + REPLY_GRACE)
        common.update(port=parsed.port or 5432, connect_timeout=CONNECT_TIMEOUT,
                      keepalives=1, keepalives_idle=KEEPALIVE_IDLE, keepalives_interval=KEEPALIVE_INTERVAL,
                      keepalives_count=KEEPALIVE_COUNT,
                      options=f"-c statement_timeout={int(statement_timeout * 1000)} "
                              f"-c idle_in_transaction_session_timeout={int(statement_timeout * 1000)}")
        if not common["user"]:
            common["user"] = "postgres"
        return PostgresDatabase(name, **common)
    if dialect == "mysql":
        require_driver("mysql")
        # the client waits REPLY_GRACE longer than the server lets a statement run (as on
        # PostgreSQL): the server gives up first, and never goes on holding locks for a
        # statement the client abandoned (`mysql_session_settings`)
        client_timeout = math.ceil(statement_timeout + REPLY_GRACE) if statement_timeout > 0 else None
        common.update(port=parsed.port or 3306, connect_timeout=CONNECT_TIMEOUT,
                      read_timeout=client_timeout, write_timeout=client_timeout,
                      charset="utf8mb4",
                      # no gap locks: enqueue and claim must not deadlock each other
                      init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        if not common["user"]:
            common["user"] = "root"
        return MySQLDatabase(name, statement_timeout=statement_timeout, **common)
    raise ConfigError("database_url", f"unsupported scheme {scheme!r}")


def sqlite_path(url: str) -> str | None:
    """The file of a ``sqlite:///PATH`` URL (``sqlite:////abs/path`` for an absolute one), or None
    for another database."""
    if urlparse(url).scheme != "sqlite":
        return None
    path = unquote(url.split("://", 1)[1])
    return path[1:] if path.startswith("/") else path


def require_database_file(url: str) -> None:
    """`SchemaError` for a SQLite URL whose file does not exist: a command that only reads or
    changes tasks must not create an empty database by connecting (a typo in the URL would
    leave a stray file behind and report a missing table instead of the typo)."""
    path = sqlite_path(url)
    if path and path != ":memory:" and not os.path.exists(path):
        raise SchemaError(f"database file {path!r} does not exist ({describe_url(url)}): check the database URL, "
                          "or create it with `gta migrate`")


class DropsDeadConnections(peewee.Database):
    """A database that never hands out a connection its driver knows is closed.

    peewee only knows a connection is closed when it closed it itself: after the server
    ended a session (``pg_terminate_backend``, ``KILL``, a restart) the statement that found
    out fails, and every later statement of that thread is sent to the same dead connection
    and fails as well ("connection already closed"), forever, unless something calls
    `drop_connection`. The transaction helpers do; a plain read outside them did not, and a
    supervisor thread retrying one wedged there and rescued no lease again (issue 14). Here
    the next statement outside a transaction opens a new connection instead. Inside a
    transaction the dead connection is left to fail: the transaction is lost, and only its
    owner (`in_transaction`, or the application) can run it again.
    """

    def cursor(self, named_cursor: Any = None) -> Any:
        state = self._state  # type: ignore[attr-defined]
        if not state.closed and not self.in_transaction() and driver_closed(state.conn):
            drop_connection(self)
        return super().cursor(named_cursor)


def driver_closed(conn: Any) -> bool:
    """Whether a DB-API connection knows it is closed: psycopg's ``closed``, PyMySQL's and
    mysqlclient's ``open``; False when the driver does not say (SQLite cannot lose one)."""
    closed = getattr(conn, "closed", None)
    if isinstance(closed, (bool, int)):
        return bool(closed)
    is_open = getattr(conn, "open", None)
    if isinstance(is_open, (bool, int)):
        return not is_open
    return False


class MySQLDatabase(DropsDeadConnections, peewee.MySQLDatabase):
    """peewee's MySQL/MariaDB database that reconnects after a lost connection
    (`DropsDeadConnections`), and whose sessions the server ends when their host goes silent.

    MySQL's server keeps a session, its open transaction and its row locks for as long as
    the TCP connection looks alive to it: a host cut off mid-transaction (a partition, a dead
    switch, a frozen VM) held its leases' rows locked for every other supervisor until
    ``wait_timeout`` (8 h) or the server's TCP keepalive (2 h). Each connection therefore sets,
    at connect, the server-side bounds of `mysql_session_settings` (an idle transaction is
    ended within the statement timeout, a lock wait and a statement give up before the
    client's read timeout does) and TCP keepalives on its socket (`keep_alive`).
    """

    def __init__(self, database: str, statement_timeout: float = 0.0, **kwargs: Any) -> None:
        self.statement_timeout = statement_timeout
        super().__init__(database, **kwargs)

    def _connect(self) -> Any:
        conn = super()._connect()  # type: ignore[misc]  # peewee's hook, untyped in its stubs
        try:
            keep_alive(conn)
            settings = mysql_session_settings(str(conn.get_server_info()), self.statement_timeout)
            if settings:
                cursor = conn.cursor()
                cursor.execute(settings)
                cursor.close()
        except BaseException:
            conn.close()
            raise
        return conn


def mysql_session_settings(server_version: str, statement_timeout: float) -> str:
    """The ``SET SESSION`` statement that bounds, on the server, what a silent client can hold.

    - ``idle_transaction_timeout`` (MariaDB ≥ 10.3): the server ends a session that sits in
      an open transaction without a word for the statement timeout, rolling it back and
      freeing its row locks, as PostgreSQL's ``idle_in_transaction_session_timeout`` does.
      GTA's transactions never wait on anything between their statements, so only a host
      that went silent (or a stopped process) is ever ended by it. MySQL has no such
      variable; there the locks of a silent host's transaction last until the server's TCP
      keepalive or ``wait_timeout`` end the session (see docs/guarantees.md).
    - ``max_statement_time`` (MariaDB, seconds) / ``max_execution_time`` (MySQL, ms, read-only
      SELECTs only): the server aborts a statement at the statement timeout, before the
      client gives up on it (`open_database` gives the client ``REPLY_GRACE`` more). A client
      that gives up first closes its socket, but the server notices only once the statement
      ends: an abandoned statement went on holding, and waiting for, row locks.
    - ``innodb_lock_wait_timeout``: a lock wait gives up after a fifth of the statement
      timeout (default 50 s), shorter than the lease: a row locked by a silent host's open
      transaction costs the waiter a retry (`db.transactions.in_transaction`), not its lease.
    - ``lock_wait_timeout`` (metadata locks, default a year): the statement timeout.

    Empty when ``statement_timeout`` is 0 (a connection that waits as long as it takes).
    """
    if statement_timeout <= 0:
        return ""
    seconds = max(1, math.ceil(statement_timeout))
    settings = [f"SESSION innodb_lock_wait_timeout = {lock_wait_seconds(statement_timeout)}",
                f"SESSION lock_wait_timeout = {seconds}"]
    mariadb = "mariadb" in server_version.lower()
    if mariadb:
        settings.append(f"SESSION max_statement_time = {statement_timeout:g}")
        if _version(server_version) >= (10, 3):
            settings.append(f"SESSION idle_transaction_timeout = {seconds}")
    elif _version(server_version) >= (5, 7, 8):
        settings.append(f"SESSION max_execution_time = {int(statement_timeout * 1000)}")
    return "SET " + ", ".join(settings)


def lock_wait_seconds(statement_timeout: float) -> int:
    """``innodb_lock_wait_timeout`` for a statement timeout: a fifth of it, at least 1 s."""
    return max(1, int(statement_timeout / 5))


def _version(server_version: str) -> tuple[int, ...]:
    """``(10, 11, 6)`` from ``'10.11.6-MariaDB-0+deb12u1'`` (or ``'5.5.5-10.11.6-MariaDB'``,
    the prefix older servers send to old clients)."""
    numbers = re.findall(r"(\d+)\.(\d+)\.(\d+)", server_version)
    if not numbers:
        return (0,)
    chosen = numbers[-1] if "mariadb" in server_version.lower() else numbers[0]
    return tuple(int(part) for part in chosen)


#: TCP keepalive of every database connection: probe a connection silent for KEEPALIVE_IDLE s
#: every KEEPALIVE_INTERVAL s, and give up on it after KEEPALIVE_COUNT unanswered probes
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 10, 5, 3


def keep_alive(conn: Any) -> None:
    """TCP keepalives on a MySQL driver connection's socket (PyMySQL's; mysqlclient exposes
    none), as libpq's ``keepalives`` options give PostgreSQL connections: a connection to a
    server that vanished fails within about 25 s of silence instead of the system's 2 h."""
    sock = getattr(conn, "_sock", None)
    if not isinstance(sock, socket.socket) or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                          ("TCP_KEEPCNT", KEEPALIVE_COUNT)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


class PostgresDatabase(DropsDeadConnections, peewee.PostgresqlDatabase):
    """peewee's PostgreSQL database with two round trips less on a small transaction, that
    reconnects after a lost connection (`DropsDeadConnections`).

    - ``BEGIN`` rides with the transaction's first statement. peewee runs the driver in
      autocommit mode and sends ``BEGIN`` as a round trip of its own, a sixth of a one-task
      submit's time. Here `begin` only notes it; the first statement through `execute_sql`
      goes as ``BEGIN; <statement>`` in one message (psycopg2 binds parameters on the client
      and returns the last statement's result), and a transaction that sent nothing commits
      or rolls back without a round trip. Code that takes a raw cursor or connection from the
      database gets the ``BEGIN`` sent first, so its statements are inside the transaction.
    - `execute_prepared` runs a statement the server parsed and planned once per connection.

    Both need psycopg2 (psycopg 3 binds parameters on the server, one statement per message);
    with psycopg 3 this is plain peewee.
    """

    _prepared_statements_last = True  # until a session forgets one (see `execute_prepared`)

    @property
    def _local(self) -> Any:
        """peewee's per-thread state: the connection, the transaction stack."""
        return self._state  # type: ignore[attr-defined]

    @property
    def prepares(self) -> bool:
        """Whether `execute_prepared` and the deferred ``BEGIN`` work: the driver is psycopg2."""
        return isinstance(self._adapter, peewee.Psycopg2Adapter)  # type: ignore[attr-defined]

    def begin(self, isolation_level: Any = None) -> None:
        if not self.prepares:
            return super().begin(isolation_level)
        level = self._isolation_level if isolation_level is None else isolation_level  # type: ignore[attr-defined]
        adapter: Any = self._adapter  # type: ignore[attr-defined]
        statement = f"BEGIN TRANSACTION ISOLATION LEVEL {adapter.isolation_level_str(level)}" if level else "BEGIN"
        if self.is_closed():
            self.connect()
        self._local.deferred_begin = (self._local.conn, statement)
        self._local.begin_unanswered = False

    def _take_deferred_begin(self) -> str | None:
        """The noted ``BEGIN`` of this thread's open connection, forgotten once taken (one noted
        on a connection since dropped belongs to no transaction anymore)."""
        deferred = getattr(self._local, "deferred_begin", None)
        if deferred is None:
            return None
        self._local.deferred_begin = None
        conn, statement = deferred
        return statement if conn is self._local.conn and not self._local.closed else None

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        begin = self._take_deferred_begin()
        if not begin:
            return super().execute_sql(sql, params)
        self._local.begin_unanswered, self._local.begin_sent = True, begin
        cursor = super().execute_sql(f"{begin}; {sql}", params)
        self._local.begin_unanswered = False
        return cursor

    def failed_at_begin(self) -> bool:
        """Whether this thread's last transaction failed in the statement that carried its
        ``BEGIN``: no statement of it had run before, and nothing of it can have committed."""
        return bool(getattr(self._local, "begin_unanswered", False))

    def cursor(self, named_cursor: Any = None) -> Any:
        self._send_deferred_begin()
        return super().cursor(named_cursor)

    def connection(self) -> Any:
        self._send_deferred_begin()
        return super().connection()

    def _send_deferred_begin(self) -> None:
        begin = self._take_deferred_begin()
        if begin:
            super().execute_sql(begin)

    def commit(self) -> None:
        if self._take_deferred_begin() is None:
            super().commit()

    def rollback(self) -> None:
        if self._take_deferred_begin() is None:
            super().rollback()

    def execute_prepared(self, statement: str, params: Sequence[Any]) -> Any:
        """Run ``statement`` (``$n`` placeholders, each once and in order) as a prepared
        statement, which this connection prepares on first use (only where `prepares`).

        Prepared statements belong to the session, not to a transaction (a rollback keeps
        them), so one prepared is known to exist for as long as its connection object does.
        A session that forgets them (``DISCARD ALL`` or ``DEALLOCATE`` behind GTA's back, or a
        pooler such as PgBouncer in transaction mode, which hands each transaction whichever
        server connection is free) fails the ``EXECUTE``, and a session shared that way may
        already hold the name another client prepared, failing the ``PREPARE``; either way, from
        then on this database runs the statements unprepared. When the failed statement carried
        its transaction's ``BEGIN`` (nothing of the transaction ran), the transaction is begun
        again and the statement runs unprepared at once, a caller's transaction included.
        Otherwise the failure is retryable (`is_retryable`): GTA's own statements and
        transactions run again at once, unprepared; a caller's transaction that had already
        run statements fails, as on any database error (the server has aborted it).
        """
        if self.is_closed():
            self.connect()
        if not self._prepared_statements_last:
            return self.execute_sql(unprepared(statement), params)
        name = prepared_name(statement)
        prepared = _PREPARED.setdefault(self._local.conn, set())
        try:
            if name not in prepared:
                self.execute_sql(f"PREPARE {name} AS {statement}")
                prepared.add(name)
            return self.execute_sql(f"EXECUTE {name}({', '.join(['%s'] * len(params))})", params)
        except peewee.DatabaseError as exc:
            if not session_not_ours(exc):
                raise
            self._prepared_statements_last = False
            log.warning("the database session forgot a prepared statement, or has one another connection "
                        "prepared (DISCARD ALL, or a connection pooler in transaction mode?); GTA runs its "
                        "statements unprepared from now on")
            if not (self.failed_at_begin() and self.in_transaction()):
                raise
            # it was the transaction's first statement, so nothing of it ran: begin it again,
            # unprepared, rather than fail the caller's transaction for GTA's own choice
            peewee.PostgresqlDatabase.execute_sql(self, "ROLLBACK")
            self._local.deferred_begin = (self._local.conn, self._local.begin_sent)
            return self.execute_sql(unprepared(statement), params)


def unprepared(statement: str) -> str:
    """A `PostgresDatabase.execute_prepared` statement with the driver's placeholders."""
    return re.sub(r"\$\d+", "%s", statement)


@functools.cache
def prepared_name(statement: str) -> str:
    """The name a statement is prepared under: the same text, the same name, on every
    connection (a different table or queue list is a different text)."""
    return f"gta_{hashlib.sha1(statement.encode()).hexdigest()[:24]}"


#: the statements each psycopg2 connection has prepared (`PostgresDatabase.execute_prepared`)
_PREPARED: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


def describe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return redact_url(url)


def drop_connection(db: peewee.Database) -> None:
    """Forget this thread's connection without trusting it; the next query opens a new one."""
    state = db._state  # type: ignore[attr-defined]  # peewee keeps the thread's connection here
    conn = state.conn
    state.reset()
    if conn is not None:
        try:
            conn.close()
        except Exception:
            pass


def drop_if_hung_up(db: peewee.Database) -> None:
    """Drop this thread's idle connection if the server has hung up on it (restarted, or ended
    the session): a connection that waits for no answer has nothing to read unless the server
    said goodbye. One ``poll`` of its socket, no round trip. For a statement that cannot be
    sent again once sent (`transactions.in_statement`): a dead connection is found before it."""
    state = db._state  # type: ignore[attr-defined]
    conn = state.conn
    fileno = getattr(conn, "fileno", None)
    if conn is None or state.closed or db.in_transaction() or fileno is None:
        return
    try:
        poller = select.poll()
        poller.register(fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
        hung_up = bool(poller.poll(0))
    except Exception:  # psycopg2 refuses ``fileno`` on a connection it knows is closed
        hung_up = True
    if hung_up:
        drop_connection(db)


def check_connection(db: peewee.Database, url: str) -> None:
    """Open a connection now, turning failure into one clear `DatabaseUnavailable` line."""
    try:
        db.connect(reuse_if_open=True)
        db.execute_sql("SELECT 1")
    except (peewee.OperationalError, peewee.InterfaceError, peewee.DatabaseError) as exc:
        drop_connection(db)
        reason = str(driver_error(exc)).strip().splitlines()[0] if str(driver_error(exc)).strip() else repr(exc)
        raise DatabaseUnavailable(f"cannot reach database {describe_url(url)}: {reason}") from exc
