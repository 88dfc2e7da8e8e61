"""The statements of global limits (`LimitStatements`), per dialect, built once per (dialect, table).

A limit is a row of ``<table>_limits``: its scope (``kind`` 'task' with a task key, or 'queue'
with a queue name), ``concurrency`` (how many of its tasks may hold an unexpired lease at
once; with ``per_key``, per value of the task rows' ``concurrency_key``), a rate (at most
``rate_count`` starts per fixed window of ``rate_period`` seconds) and the current window
(``window_start``, epoch seconds, a multiple of the period; ``window_count``, starts in it).
Leasing locks the rows that concern it in (kind, name) order, so leasers that could exceed a
limit together take turns, and two never wait on each other in opposite orders.
"""
from __future__ import annotations

import functools

from .dialects import DIALECTS, Dialect
from .statements import Template, statements

LIMIT_COLUMNS = ("kind", "name", "concurrency", "rate_count", "rate_period", "per_key", "window_start",
                 "window_count", "changed_at")


class LimitStatements:
    """Statements of limits for one table on one dialect; see `limit_statements`."""

    def __init__(self, dialect: Dialect, table: str) -> None:
        d, t, fx, k = dialect, table, dialect.fix, dialect.q("key")
        engine = statements(d.name, t)
        lim = f"{t}_limits"
        self.table = lim
        self.create = (f"CREATE TABLE {lim} (kind VARCHAR(16) NOT NULL, name VARCHAR(191) NOT NULL, "
                       "concurrency INTEGER NULL, rate_count INTEGER NULL, rate_period INTEGER NULL, "
                       "per_key BOOLEAN NOT NULL, window_start BIGINT NULL, window_count INTEGER NOT NULL DEFAULT 0, "
                       f"changed_at {d.timestamp} NOT NULL, PRIMARY KEY (kind, name)){d.table_options}")
        columns = ", ".join(LIMIT_COLUMNS)
        #: whether any limit exists: the one statement an unlimited worker adds, once a second
        self.any_limit = f"SELECT 1 FROM {lim} LIMIT 1"
        self.rows = f"SELECT {columns} FROM {lim} ORDER BY kind, name"
        lock = " FOR UPDATE" if d.name in ("postgres", "mysql") else ""  # SQLite: BEGIN IMMEDIATE
        # the limits a lease of ``{queues}`` must obey, locked in one fixed order; the last
        # column is the database clock, which places the rate windows
        self.lock = Template(
            f"SELECT kind, name, concurrency, rate_count, rate_period, per_key, window_start, window_count, "
            f"{d.now} FROM {lim} WHERE kind = 'task' OR (kind = 'queue' AND name IN ({{queues}})) "
            f"ORDER BY kind, name{lock}"
        )
        # a window's starts: one parameter list per limit whose window moved or filled
        self.set_window = fx(f"UPDATE {lim} SET window_start = ?, window_count = ? WHERE kind = ? AND name = ?")
        values = "(?, ?, ?, ?, ?, ?, 0, ?)"
        insert = (f"INSERT INTO {lim} (kind, name, concurrency, rate_count, rate_period, per_key, window_count, "
                  f"changed_at) VALUES {values.replace('?)', f'{d.now})')}")
        self.upsert = fx(insert + " " + d.update_existing(
            "kind, name", ("concurrency", "rate_count", "rate_period", "per_key", "changed_at")))
        self.delete = fx(f"DELETE FROM {lim} WHERE kind = ? AND name = ?")

        # Running tasks under the locked limits: only unexpired leases count, so the slot of a
        # worker that died returns when its lease expires (or is released at once by its
        # supervisor's janitor). The expiry index finds them. ``{scope}``: which rows concern us.
        self.running = (Template(f"SELECT {k}, queue, concurrency_key, COUNT(*) FROM {t} WHERE status = 'running' "
                        f"AND lease_expires_at > {d.now} AND ({{scope}}) GROUP BY {k}, queue, concurrency_key"))
        skip_locked = "" if d.name == "sqlite" else " FOR UPDATE SKIP LOCKED"
        # due rows under limits that have room (``{scope}``), minus those of limits that are
        # full (``{full}``: `` AND NOT (…)`` parts), in the lease order
        self.candidates = Template(
            f"SELECT id, {k}, queue, concurrency_key FROM {t} WHERE {engine.due} AND ({{scope}})"
            f"{{full}} {engine.lease_order} LIMIT ?{skip_locked}"
        )
        self.lease_ids = engine.lease_ids
        self.lease_ids_returning = Template(f"{engine.lease_ids} RETURNING {engine.lease_columns}")
        self.leased_rows = engine.leased_rows
        # the rest of a lease, under no limit: today's lease, minus the rows of limited keys and queues
        unlimited_ids = (f"SELECT id FROM {t} WHERE {engine.due}{{unlimited}} {engine.lease_order} "
                         f"LIMIT ?{skip_locked}")
        self.unlimited_ids = Template(unlimited_ids)
        self.lease_unlimited = (Template(f"UPDATE {t} SET {engine.lease_set} WHERE id IN ({unlimited_ids}) "
                                f"RETURNING {engine.lease_columns}"))


@functools.cache
def limit_statements(dialect_name: str, table: str) -> LimitStatements:
    return LimitStatements(DIALECTS[dialect_name], table)
