"""The PostgreSQL listener: LISTENs for submit's NOTIFY and wakes the workers.

Its connection is its own and is re-established after any failure, with backoff; every time
it is (again) listening it wakes the workers, for whatever was committed while it was not.

A connection that only listens sends nothing, so nothing tells it that its host was cut off:
the notifications the server sent meanwhile wait in the server's TCP retransmission backoff,
which after a 15 s partition is next tried some 10 s after the network is back, and the
host's workers sat deaf to every submit that long (polling, while other hosts took the work).
After `PROBE_AFTER` seconds without a notification the listener says its ``LISTEN`` again (a
no-op for the server, and what the session still shows as its last query), whose answer the
reply watchdog waits for at most `PROBE_TIMEOUT` + grace: a connection that does not answer
is replaced, and the new one listens (and wakes the workers) at once.
"""
from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable
from typing import Any

import peewee

from ...db.connect import drop_connection, open_database
from .runner import Service

log = logging.getLogger("gta.supervisor")

#: longest one wait for a notification, so that each iteration ends and the runner sees it alive
POLL = 1.0
#: seconds without a notification after which the connection is asked whether it is alive
PROBE_AFTER = 2.0
#: how long the server may take over that question (the client waits REPLY_GRACE longer)
PROBE_TIMEOUT = 1.0


class Listener(Service):
    name = "listener"

    def __init__(self, database_url: str, table: str, wake_workers: Callable[[], None]) -> None:
        self.database_url = database_url
        self.channel = f"gta_{table}"
        self.wake_workers = wake_workers
        self.db: peewee.Database | None = None
        self.conn: Any = None
        self.failures = 0
        self.heard = 0.0  # when (monotonic) the connection last answered or notified

    def step(self, done: threading.Event) -> None:
        try:
            if self.conn is None:
                self._listen()
            if select.select([self.conn], [], [], POLL)[0]:
                self.conn.poll()
                self.heard = time.monotonic()
                if self.conn.notifies:
                    self.conn.notifies.clear()
                    self.wake_workers()
            elif time.monotonic() - self.heard >= PROBE_AFTER:
                self._probe()
        except Exception as exc:
            self.failures += 1
            log.warning("LISTEN connection failed (%s); reconnecting", exc)
            self.close()
            done.wait(min(10.0, 0.2 * 2 ** self.failures))

    def _listen(self) -> None:
        self.db = open_database(self.database_url, statement_timeout=PROBE_TIMEOUT)
        conn = self.db.connection()
        with conn.cursor() as cursor:
            cursor.execute(f'LISTEN "{self.channel}"')
        self.conn, self.failures, self.heard = conn, 0, time.monotonic()
        self.wake_workers()  # anything committed while we were not listening

    def _probe(self) -> None:
        """Ask the server for an answer; a connection that gives none within the reply
        watchdog's time is cut, and the failure replaces it."""
        with self.conn.cursor() as cursor:
            cursor.execute(f'LISTEN "{self.channel}"')
        self.heard = time.monotonic()
        self.conn.poll()  # notifications that arrived with the answer
        if self.conn.notifies:
            self.conn.notifies.clear()
            self.wake_workers()

    def close(self) -> None:
        if self.db is not None:
            drop_connection(self.db)
        self.db, self.conn = None, None
