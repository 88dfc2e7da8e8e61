"""The statements of the operations side (the monitor, cleanup and the admin CLI), per dialect.

Kept apart from `store.sql.statements.Statements` (the engine's hot path) and built the same way.
"""
from __future__ import annotations

import functools

from .dialects import DIALECTS, Dialect
from .statements import RERUN_ERROR_PREFIX, Template, statements


class OperationStatements:
    """Statements of the operations side: the monitor, cleanup and the admin CLI.

    Kept apart from `Statements` (the engine's hot path) and built the same way, once per
    (dialect, table); see `operation_statements`. ``{ids}``/``{statuses}`` are filled with
    ``?`` placeholders by the store.
    """

    def __init__(self, dialect: Dialect, table: str) -> None:
        d, t, fx = dialect, table, dialect.fix
        columns = statements(dialect.name, table).all_columns
        lock = " FOR UPDATE SKIP LOCKED" if d.name in ("postgres", "mysql") else ""

        # -- monitor ---------------------------------------------------------------------
        # The monitor's watermark: when the latest successful run of the given slots started.
        self.latest_start = (Template(f"SELECT MAX(started_at) FROM {t} "
                             "WHERE dedupe_key IN ({keys}) AND status = 'succeeded'"))
        # Parameters: minus the threshold in seconds, then a row limit. Partial indexes (or
        # status-leading ones on MySQL) keep finished rows out of both.
        self.running_too_long = fx(f"SELECT {columns} FROM {t} WHERE status = 'running' "
                                   f"AND started_at < {d.now_plus()} ORDER BY started_at LIMIT ?")
        # Parameters: queue, key, limit. On the lease index.
        self.pending_due = fx(f"SELECT {columns} FROM {t} WHERE status = 'pending' AND queue = ? "
                              f"AND {d.q('key')} = ? AND run_at <= {d.now} ORDER BY run_at LIMIT ?")
        self.pending_too_long = fx(f"SELECT {columns} FROM {t} WHERE status = 'pending' "
                                   f"AND run_at < {d.now_plus()} ORDER BY run_at LIMIT ?")
        # Parameters: since, until, limit. finished_at is indexed.
        self.failed_between = fx(f"SELECT {columns} FROM {t} WHERE finished_at > ? AND finished_at <= ? "
                                 "AND status = 'failed' ORDER BY finished_at LIMIT ?")
        # A rescue writes last_error and updated_at; the row then stays pending (or failed) until
        # a worker leases it again, which sets started_at. So the moment a rescue is dated by
        # is updated_at while pending, started_at once re-leased (running, then succeeded; a
        # retry or a failure overwrites last_error), finished_at when the rescue failed it.
        # One branch per state, each on an index (finished_at > since is implied for a
        # succeeded row dated by started_at, and lets it use the finished_at index).
        branch = f"SELECT {columns} FROM {t} WHERE last_error LIKE ? AND "
        self.rescued_between = fx(
            f"SELECT * FROM ({branch}status = 'pending' AND updated_at > ? AND updated_at <= ? "
            f"UNION ALL {branch}status = 'running' AND started_at > ? AND started_at <= ? "
            f"UNION ALL {branch}finished_at > ? AND status = 'succeeded' AND started_at > ? AND started_at <= ? "
            f"UNION ALL {branch}finished_at > ? AND finished_at <= ? AND status = 'failed'"
            ") rescued ORDER BY id LIMIT ?")

        # -- cleanup and purge -------------------------------------------------------------
        # One batch: pick ids on the finished_at index (skipping rows another cleanup holds),
        # then delete exactly those by primary key, re-checking the condition.
        # Parameters: statuses, minus the age in seconds, limit / ids, statuses, minus the age.
        # The members of a group whose callback was not released yet are kept: it reads their outcomes.
        self.finished_ids = Template(
            f"SELECT id FROM {t} WHERE finished_at < {d.now_plus()} AND status IN ({{statuses}}) "
            f"AND (group_id IS NULL OR group_id NOT IN "
            f"(SELECT id FROM {t}_groups WHERE remaining > 0)) "
            f"ORDER BY finished_at LIMIT ?{lock}"
        )
        self.delete_finished = (Template(f"DELETE FROM {t} WHERE id IN ({{ids}}) AND status IN ({{statuses}}) "
                                f"AND finished_at < {d.now_plus()}"))

        # -- admin -------------------------------------------------------------------------
        self.list = Template(f"SELECT {columns} FROM {t}{{where}} ORDER BY id DESC LIMIT ?")
        # Parameter: minus the window in seconds. finished_at is indexed.
        self.succeeded_per_queue = fx(f"SELECT queue, COUNT(*) FROM {t} WHERE finished_at >= {d.now_plus()} "
                                      "AND status = 'succeeded' GROUP BY queue")
        self.ids_with_status = fx(f"SELECT id FROM {t} WHERE status = ? AND id > ? ORDER BY id LIMIT ?")
        # GTA's ForceRerunTasks: a failed or cancelled task starts over, due now.
        previous = d.concat(repr(RERUN_ERROR_PREFIX), "COALESCE(last_error, '')")
        self.rerun = Template(
            f"UPDATE {t} SET status = 'pending', attempts = 0, run_at = {d.now}, finished_at = NULL, "
            f"started_at = NULL, lease_owner = NULL, lease_expires_at = NULL, last_error = {previous}, "
            f"updated_at = {d.now} WHERE id IN ({{ids}}) AND status IN ('failed', 'cancelled')"
        )
        self.queues_of = Template("SELECT DISTINCT queue FROM " + t + " WHERE id IN ({ids})")

        # -- queue controls (`gta pause`, `gta resume`, `gta queues`) -----------------------------
        q = f"{t}_queues"
        # a row to pause or resume: a new queue starts out not paused (racing pausers both pass)
        self.add_queue = fx(f"INSERT INTO {q} (name, paused, changed_at) VALUES (?, FALSE, {d.now}) "
                            + d.skip_existing("name"))
        # Parameters: who, why, name. Zero rows: it was paused already (and keeps its since/by/why).
        self.pause = fx(f"UPDATE {q} SET paused = TRUE, changed_at = {d.now}, changed_by = ?, reason = ? "
                        "WHERE name = ? AND NOT paused")
        # Parameters: who, name. Zero rows: it was not paused.
        self.resume = fx(f"UPDATE {q} SET paused = FALSE, changed_at = {d.now}, changed_by = ?, reason = NULL "
                         "WHERE name = ? AND paused")
        self.queue_controls = f"SELECT name, paused, changed_at, changed_by, reason FROM {q} ORDER BY name"

        # -- the roster of supervisors (`services/advertiser.py`, `store/roster.py`) --------------------
        # One row per supervisor: the queues it serves and the task keys it has handlers for
        # (JSON lists), renewed while it runs; it is live until ``expires_at`` (its clock is the
        # database's, as a lease's). Its own table, created by `gta migrate` at the same version.
        r = f"{t}_supervisors"
        self.roster_table = r
        self.create_roster = (f"CREATE TABLE {r} (name VARCHAR(191) NOT NULL PRIMARY KEY, "
                              f"host VARCHAR(191) NOT NULL, pid INTEGER NOT NULL, queues {d.text} NOT NULL, "
                              f"task_keys {d.text} NOT NULL, started_at {d.timestamp} NOT NULL, "
                              f"seen_at {d.timestamp} NOT NULL, expires_at {d.timestamp} NOT NULL){d.table_options}")
        # Parameters: name, host, pid, queues, task keys, seconds alive.
        insert = (f"INSERT INTO {r} (name, host, pid, queues, task_keys, started_at, seen_at, expires_at) "
                  f"VALUES (?, ?, ?, ?, ?, {d.now}, {d.now}, {d.now_plus()}) ")
        self.advertise = fx(insert + d.update_existing("name", ("queues", "task_keys", "seen_at", "expires_at")))
        self.withdraw = fx(f"DELETE FROM {r} WHERE name = ?")
        # Parameter: minus how long a dead supervisor's row is kept, in seconds.
        self.forget_dead = fx(f"DELETE FROM {r} WHERE expires_at < {d.now_plus()}")
        self.roster = (f"SELECT name, host, pid, queues, task_keys, started_at, seen_at, "
                       f"CASE WHEN expires_at > {d.now} THEN 1 ELSE 0 END FROM {r} ORDER BY name")


@functools.cache
def operation_statements(dialect_name: str, table: str) -> OperationStatements:
    return OperationStatements(DIALECTS[dialect_name], table)
