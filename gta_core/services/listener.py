"""The PostgreSQL listener: LISTENs for submit's NOTIFY and wakes the workers.

Its connection is its own (no statement timeout: it waits for notifications, it runs no
queries) and is re-established after any failure, with backoff; every time it is (again)
listening it wakes the workers, for whatever was committed while it was not.
"""
from __future__ import annotations

import logging
import select
import threading
from collections.abc import Callable
from typing import Any

import peewee

from ..database import drop_connection, open_database
from .runner import Service

log = logging.getLogger("gta.supervisor")

#: longest one wait for a notification, so that each iteration ends and the runner sees it alive
POLL = 1.0


class Listener(Service):
    name = "listener"

    def __init__(self, database_url: str, table: str, wake_workers: Callable[[], None]) -> None:
        self.database_url = database_url
        self.channel = f"gta_{table}"
        self.wake_workers = wake_workers
        self.db: peewee.Database | None = None
        self.conn: Any = None
        self.failures = 0

    def step(self, done: threading.Event) -> None:
        try:
            if self.conn is None:
                self._listen()
            if select.select([self.conn], [], [], POLL)[0]:
                self.conn.poll()
                if self.conn.notifies:
                    self.conn.notifies.clear()
                    self.wake_workers()
        except Exception as exc:
            self.failures += 1
            log.warning("LISTEN connection failed (%s); reconnecting", exc)
            self.close()
            done.wait(min(10.0, 0.2 * 2 ** self.failures))

    def _listen(self) -> None:
        self.db = open_database(self.database_url, statement_timeout=0)
        conn = self.db.connection()
        with conn.cursor() as cursor:
            cursor.execute(f'LISTEN "{self.channel}"')
        self.conn, self.failures = conn, 0
        self.wake_workers()  # anything committed while we were not listening

    def close(self) -> None:
        if self.db is not None:
            drop_connection(self.db)
        self.db, self.conn = None, None
