"""A client-side read timeout for PostgreSQL connections, which libpq lacks: `guarded_cursor`
makes cursors whose statements one watchdog thread per process cuts when overdue.
"""
from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from typing import Any

log = logging.getLogger("gta.database")

class _ReplyWatchdog:
    """Cuts a PostgreSQL connection whose statement has gone unanswered for too long.

    libpq has no client-side read timeout: statement_timeout is enforced by the server, and
    TCP keepalives are answered by whatever holds the other end (a stopped server's kernel,
    a middlebox that lost the route), so a connection that accepts bytes but never answers
    would block its thread forever: a worker alive but idle, a shutdown that never ends.
    One thread per process shuts down the socket of each overdue statement; libpq then fails
    it as a lost connection, which every caller already handles. Should that thread ever
    die, the next statement watched starts it again (and says so).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[int, tuple[float, int]] = {}  # token -> (deadline, socket fd)
        self._tokens = itertools.count()
        self._pid = 0
        self._thread: threading.Thread | None = None

    def watch(self, fd: int, seconds: float) -> int:
        with self._lock:
            if self._pid != os.getpid():  # first use here, or a forked child the thread did not follow
                self._pid = os.getpid()
                self._watched.clear()
                self._thread = None
            if self._thread is None or not self._thread.is_alive():
                if self._thread is not None:
                    log.error("the reply watchdog thread had died; starting it again")
                self._thread = threading.Thread(target=self._run, name="gta-db-watchdog", daemon=True)
                self._thread.start()
            token = next(self._tokens)
            self._watched[token] = (time.monotonic() + seconds, fd)
            return token

    def unwatch(self, token: int) -> None:
        with self._lock:
            self._watched.pop(token, None)

    def _run(self) -> None:
        while True:
            time.sleep(0.25)
            now = time.monotonic()
            with self._lock:  # a watched fd is open: its statement has not returned, so not closed
                for token, (deadline, fd) in list(self._watched.items()):
                    if deadline <= now:
                        del self._watched[token]
                        _cut(fd)


def _cut(fd: int) -> None:
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()  # the duplicate only; the driver closes its own descriptor


_WATCHDOG = _ReplyWatchdog()


def guarded_cursor(seconds: float) -> type:
    """A psycopg2 cursor class whose statements the watchdog cuts after ``seconds``."""
    import psycopg2.extensions

    class GuardedCursor(psycopg2.extensions.cursor):  # type: ignore[misc]
        def execute(self, query: Any, vars: Any = None) -> Any:
            token = _WATCHDOG.watch(self.connection.fileno(), seconds)
            try:
                return super().execute(query, vars)
            finally:
                _WATCHDOG.unwatch(token)

    return GuardedCursor
