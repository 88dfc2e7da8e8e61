"""A process's GTA: its settings, plugins, database and store, built on first use.

Nothing is built at import time. Applications call `configure` once (or rely on ``GTA_*``
environment variables); the supervisor and each worker build their own `Runtime`.
"""
from __future__ import annotations

import dataclasses
import functools
import threading
from typing import Any

import peewee

from .config import Settings, load_settings
from .db.connect import open_database
from .db.wakeup import notify_local, wake_key
from .plugins import Plugins, build_plugins
from .store.task_store import TaskStore


@dataclasses.dataclass
class Runtime:
    """One process's GTA: its settings, and the plugins, database and store built from them on
    first use (never at import), so a process that only submits never loads what it does not need."""

    settings: Settings
    #: set by `gta_core.testing.eager`: submits run inline after commit instead of being stored
    eager: Any = None

    @functools.cached_property
    def plugins(self) -> Plugins:
        return build_plugins(self, self.settings.plugins, self.settings.disable_plugins)

    @property
    def statement_timeout(self) -> float:
        """Seconds a statement of GTA's own may run. One that outlasts a lease period protects
        nothing any more (the lease is gone), and its timeout is what notices a connection
        that never answers."""
        return max(5.0, min(60.0, self.settings.lease_timeout))

    @functools.cached_property
    def db(self) -> peewee.Database:
        return open_database(self.settings.database_url, statement_timeout=self.statement_timeout)

    @functools.cached_property
    def store(self) -> TaskStore:
        return TaskStore(self.db, self.settings.table, attempts_kept=self.settings.attempts_kept)

    def store_for(self, db: peewee.Database) -> TaskStore:
        """The store on a caller's own Database object (same table)."""
        if db is self.db:
            return self.store
        return TaskStore(db, self.settings.table, attempts_kept=self.settings.attempts_kept)

    def wake_key(self, db: peewee.Database) -> str:
        return wake_key(db, self.settings.table)

    def wake_idle_workers(self) -> None:
        """Wake this host's idle workers after a write that made tasks due (a re-run, a resumed
        queue, an insert): on PostgreSQL the write's ``NOTIFY`` reached every host already."""
        if self.store.dialect != "postgres":
            notify_local(self.wake_key(self.db))


_lock = threading.Lock()
_current: Runtime | None = None


def configure(settings: Settings | None = None, **overrides: Any) -> Runtime:
    """Set this process's GTA settings (explicit values over ``GTA_*`` variables)."""
    global _current
    runtime = Runtime(settings if settings is not None else load_settings(overrides))
    with _lock:
        _current = runtime
    return runtime


def get_runtime() -> Runtime:
    """This process's runtime, built from the environment on first use."""
    global _current
    with _lock:
        if _current is None:
            _current = Runtime(load_settings())
        return _current


def reset() -> None:
    """Forget the runtime (tests), closing its connection."""
    global _current
    with _lock:
        runtime, _current = _current, None
    if runtime is not None and "db" in runtime.__dict__ and not runtime.db.is_closed():
        runtime.db.close()
