"""The advertiser: keeps this supervisor's row of the roster (`gta_core.store.roster`) alive.

The row says which queues the supervisor serves and which task keys its workers have handlers
for (they lease no other), so that whoever reads the roster (the monitor, the metrics, ``gta
stats``, the dashboard) can tell a task that no live supervisor can run from one that merely
waits its turn. It is written at once, renewed every third of ``lease_timeout`` and live for a
lease period after each renewal (the database's clock), like a lease; the supervisor removes it
as it stops. Rows of supervisors dead for a day are deleted by whichever supervisor renews next.
"""
from __future__ import annotations

import logging
import os
import secrets
import socket
import threading

import peewee

from ...db.connect import drop_connection
from ...errors import GTAError
from ...runtime import Runtime
from .runner import Outage, Service

log = logging.getLogger("gta.supervisor")

#: how long (seconds) the row of a supervisor that died without removing it is kept, for operators
KEEP_DEAD = 86400.0


class Advertiser(Service):
    name = "advertiser"

    def __init__(self, runtime: Runtime, outage: Outage) -> None:
        self.runtime = runtime
        self.outage = outage
        self.host = socket.gethostname()
        self.pid = os.getpid()
        #: the row's name: host and pid for humans, a random part so a recycled pid is another row
        self.row = f"{self.host}:{self.pid}:{secrets.token_hex(4)}"
        self.keys = {key: definition.queue for key, definition in runtime.plugins.registry.tasks.items()}
        self.stopped: threading.Event | None = None

    def step(self, done: threading.Event) -> None:
        self.stopped = done
        settings = self.runtime.settings
        try:
            store = self.runtime.store
            store.advertise(self.row, self.host, self.pid, settings.queues, self.keys, settings.lease_timeout)
            store.forget_dead(KEEP_DEAD)
        except (GTAError, peewee.DatabaseError, peewee.InterfaceError) as exc:
            log.warning("could not renew this supervisor's row in the roster: %s", exc)
            self.outage.failed()
        done.wait(settings.heartbeat_interval)

    def close(self) -> None:
        """On this loop's thread as it ends: a stopping supervisor removes its row (a loop that
        died keeps it, and its restart renews it), unless the database stopped answering the
        supervisor as it stopped (`Outage`): then the row lapses a lease period later."""
        try:
            if self.outage.seen:
                log.warning("left this supervisor's row in the roster to expire: the database is unreachable")
            elif self.stopped is not None and self.stopped.is_set():
                self.runtime.store.withdraw(self.row)
        except (GTAError, peewee.DatabaseError, peewee.InterfaceError) as exc:
            log.warning("could not remove this supervisor's row from the roster (%s); it expires", exc)
        finally:
            drop_connection(self.runtime.db)
