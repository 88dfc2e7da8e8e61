"""The engine's statements (`Statements`), per dialect, built once per (dialect, table); the
operations side's are in `sql.operations`.

Statements are written with ``?`` placeholders and converted to the driver's style. The
clock is the database's where it has one (PostgreSQL, MySQL/MariaDB), so a host with a
skewed clock cannot steal live leases; SQLite, a single-host database, uses functions that
GTA registers on each connection (``gta_now()``, ``gta_now_plus(seconds)``).
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

from ...tasks import TaskRecord, family_prefix
from .dialects import DIALECTS, Dialect

SCHEMA_VERSION = 2


@dataclasses.dataclass(frozen=True)
class Template:
    """A statement with lists still to fill in (``{ids}``, ``{queues}``, ``{rows}`` …): only
    `fill` makes text that runs, so a template can never reach the database unfilled (the
    type checker refuses a `Template` where a statement goes). Every other attribute of the
    statement classes is a finished statement."""

    text: str

    def fill(self, **lists: str) -> str:
        return self.text.format(**lists)

    def __str__(self) -> str:  # a template built into a larger one stays a template
        return self.text

#: the columns a `TaskRecord` is built from, in its fields' order: read off the record itself,
#: so the store's ``TaskRecord(*row)`` can never pair a value with another column's field
TASK_COLUMNS = tuple(field.name for field in dataclasses.fields(TaskRecord))
ALL_COLUMNS = TASK_COLUMNS + ("lease_expires_at", "dedupe_key", "order_key", "parent_id",
                              "updated_at", "started_at", "finished_at", "result")
FINAL_STATUSES = ("succeeded", "failed", "cancelled")
#: the last fields of TaskRecord, left at None in a leased record (see `Statements.lease_columns`)
LEASE_SKIPS = ("last_error", "created_at")

#: The fence of an outcome write: this lease, not only this owner. A worker stopped past its
#: lease may lease the same task again (same owner) while the stale run goes on; every lease
#: counts an attempt, so the attempt number tells the two apart. A NULL attempt (operator tools
#: and tests that hold no lease record) fences on owner and status only. Parameters: id, owner,
#: attempt — the last three of every outcome write's. Written once: every outcome write of
#: every part of the store (`Statements`, `sql.workflows`, `sql.attempts`) fences with this text.
LEASE_FENCE = "id = ? AND lease_owner = ? AND status = 'running' AND attempts = COALESCE(?, attempts)"
#: The fence of a write to many of one worker's leases (renewals, batched successes, give-backs):
#: the owner's running rows among ``{ids}``.
OWNER_FENCE = "lease_owner = ? AND status = 'running' AND id IN ({ids})"


class Statements:
    """The statements for one table on one dialect; see `statements`."""

    def __init__(self, dialect: Dialect, table: str) -> None:
        d, t, k = dialect, table, dialect.q("key")
        self.dialect = dialect
        self.table = table
        fx = d.fix
        returning = ", ".join(k if c == "key" else c for c in TASK_COLUMNS)
        self.task_columns = returning
        # what a lease returns: a worker needs neither the previous error (often a traceback)
        # nor created_at (run_at is always set), so the hot path reads and parses less
        self.lease_columns = ", ".join(k if c == "key" else c for c in TASK_COLUMNS if c not in LEASE_SKIPS)
        self.all_columns = ", ".join(k if c == "key" else c for c in ALL_COLUMNS)
        ts, tx = d.timestamp, d.text
        #: every column but ``id`` with its definition: `TaskStore.migrate` adds the missing ones
        self.columns = {
            "key": "VARCHAR(191) NOT NULL", "queue": "VARCHAR(191) NOT NULL", "status": "VARCHAR(16) NOT NULL",
            "priority": "INTEGER NOT NULL DEFAULT 0", "args": f"{tx} NOT NULL", "context": f"{tx} NULL",
            "run_at": f"{ts} NOT NULL", "attempts": "INTEGER NOT NULL DEFAULT 0", "max_attempts": "INTEGER NOT NULL",
            "lease_owner": "VARCHAR(191) NULL", "lease_expires_at": f"{ts} NULL", "dedupe_key": "VARCHAR(191) NULL",
            "order_key": "VARCHAR(191) NULL", "parent_id": "BIGINT NULL", "last_error": f"{tx} NULL",
            "created_at": f"{ts} NOT NULL", "updated_at": f"{ts} NOT NULL", "started_at": f"{ts} NULL",
            "finished_at": f"{ts} NULL",
            # results and groups (`sql.workflows`): nullable, so `gta migrate` adds them to a table
            # of the same schema version, and processes of the previous release ignore them
            "result": f"{tx} NULL", "group_id": "BIGINT NULL",
            # limits (`sql.limits`): the value a task is counted under by a per-key concurrency
            # limit; nullable, added by `gta migrate` at the same schema version
            "concurrency_key": "VARCHAR(191) NULL",
        }
        self.indexes = d.indexes(t)
        self.create_schema_table = f"CREATE TABLE {t}_schema (version INTEGER NOT NULL){d.table_options}"
        self.create_table = (f"CREATE TABLE {t} ({d.id_column}, "
                             + ", ".join(f"{d.q(name) if name == 'key' else name} {definition}"
                                         for name, definition in self.columns.items())
                             + f"){d.table_options}")
        self.create = [self.create_schema_table, self.create_table, *self.indexes.values()]
        # Queue controls (`gta pause`): one row per queue ever paused, `paused` while it is. Its
        # own table, created by `gta migrate` at the same schema version: a supervisor that
        # predates it never reads it, and the task table's rows and indexes stay as they were.
        self.queues_table = f"{t}_queues"
        self.create_queues = (f"CREATE TABLE {t}_queues (name VARCHAR(191) NOT NULL PRIMARY KEY, "
                              f"paused BOOLEAN NOT NULL, changed_at {ts} NOT NULL, changed_by VARCHAR(191) NULL, "
                              f"reason {tx} NULL){d.table_options}")
        self.schema_version = f"SELECT MAX(version) FROM {t}_schema"
        self.set_schema_version = fx(f"INSERT INTO {t}_schema (version) VALUES (?)")

        insert_columns = (f"{k}, queue, status, priority, args, context, run_at, attempts, max_attempts, "
                          "dedupe_key, order_key, parent_id, created_at, updated_at")
        self.insert_row_delay = f"(?, ?, 'pending', ?, ?, ?, {d.now_plus()}, 0, ?, ?, ?, ?, {d.now}, {d.now})"
        self.insert_row_at = f"(?, ?, 'pending', ?, ?, ?, ?, 0, ?, ?, ?, ?, {d.now}, {d.now})"
        self.insert_prefix = f"INSERT INTO {t} ({insert_columns}) VALUES "
        # the same with a concurrency key, used only for rows that carry one: a submit without
        # one writes exactly what it did before limits existed (and works on an unmigrated table)
        self.insert_prefix_keyed = f"INSERT INTO {t} ({insert_columns}, concurrency_key) VALUES "
        self.insert_row_delay_keyed = self.insert_row_delay[:-1] + ", ?)"
        self.insert_row_at_keyed = self.insert_row_at[:-1] + ", ?)"
        self.notify = fx("SELECT pg_notify(?, ?)")
        # what an insert returns: the ids; on PostgreSQL also the NOTIFY of each row's queue, so a
        # submit costs no round trip of its own for the wake-up (the server drops duplicate
        # notifications within a transaction, and delivers none if it rolls back)
        self.insert_returning = (f" RETURNING id, pg_notify('gta_{t}', queue)" if d.name == "postgres"
                                 else " RETURNING id")
        self._bulk_inserts: dict[tuple[bool, ...], str] = {}
        # PostgreSQL's one-row insert, prepared once per connection (planning the VALUES row's
        # clock expressions was a fifth of a one-task submit): the `BULK_COLUMNS` in order
        self.insert_one = (
            f"{self.insert_prefix}($1, $2, 'pending', $3, $4, $5, COALESCE($6::timestamp, "
            f"{d.now} + $7::float8 * INTERVAL '1 second'), 0, $8, $9, $10, $11, {d.now}, {d.now})")
        # dedupe: insert unless a row with this dedupe_key is kept, then read the kept row's id.
        # A UNIQUE index decides (partial on the keyed rows where the database has partial
        # indexes; MySQL/MariaDB treat NULLs as distinct, so rows without a key never collide
        # there either). Racing submitters wait on the index entry, and READ COMMITTED (set on
        # MySQL connections) lets the read that follows see the winner's committed row.
        self.insert_or_skip = d.insert_or_skip
        # SQLite: ids are never handed out twice, a rolled-back submit's included (`sqlite_ids`):
        # an insert first raises the table's AUTOINCREMENT counter to the mark kept beside the
        # database, and then writes down the largest id it handed out. ``main``: the database's file.
        main = "(SELECT file FROM pragma_database_list WHERE name = 'main')"
        self.raise_id_counter = (f"UPDATE sqlite_sequence SET seq = MAX(seq, gta_id_floor({main}, '{t}')) "
                                 f"WHERE name = '{t}'")
        self.record_ids = f"SELECT gta_id_issued({main}, '{t}', ?)"
        # the counter's row, which AUTOINCREMENT adds only at a table's first insert
        self.add_id_counter = (f"INSERT INTO sqlite_sequence (name, seq) SELECT '{t}', MAX(0, gta_id_floor({main}, "
                               f"'{t}')) WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = '{t}')")
        self.id_by_dedupe_key = fx(f"SELECT id FROM {t} WHERE dedupe_key = ?")
        self.database_and_table = fx(d.database_and_table)

        # Counts the attempt only on a sound row: a counter edited out of range (negative,
        # exhausted, near the INTEGER limit, max_attempts < 1) becomes 0, never overflows, and
        # the worker fails the task with that reason (`TaskRecord.check_attempts`).
        lease_set = (f"status = 'running', lease_owner = ?, attempts = CASE WHEN attempts >= 0 AND "
                     f"attempts < max_attempts THEN attempts + 1 ELSE 0 END, "
                     f"lease_expires_at = {d.now_plus()}, started_at = {d.now}, updated_at = {d.now}")
        self.lease_set = lease_set
        # FIFO per order_key: only the oldest unfinished task of a key is ever due, so tasks
        # sharing a key run one at a time in submission (id) order; a task that ended for
        # good (succeeded, failed, cancelled) no longer holds the rest back.
        # A paused queue's rows are not due: the subquery reads the small queues table once per
        # lease (PostgreSQL hashes it, MySQL/MariaDB and SQLite materialize it), and the lease
        # index is still the one that finds the rows.
        # ``{keys}``: a worker leases only tasks it has a handler for (`known_keys`), so a task
        # whose handler this worker lacks (a rolling deploy, a host's plugins mis-set) waits,
        # unleased and unharmed, for a worker that has one; empty for operator tools and tests.
        self.due = (Template(f"status = 'pending' AND queue IN ({{queues}}){{keys}} "
                    f"AND queue NOT IN (SELECT name FROM {t}_queues WHERE paused) AND run_at <= {d.now} "
                    f"AND (order_key IS NULL OR NOT EXISTS (SELECT 1 FROM {t} prior "
                    f"WHERE prior.order_key = {t}.order_key AND prior.id < {t}.id "
                    "AND prior.status IN ('pending', 'running')))"))
        self.lease_order = "ORDER BY priority DESC, run_at, id"
        skip_locked = "" if d.name == "sqlite" else " FOR UPDATE SKIP LOCKED"  # SQLite: BEGIN IMMEDIATE
        self.due_ids = Template(f"SELECT id FROM {t} WHERE {self.due} {self.lease_order} LIMIT ?{skip_locked}")
        # a lease is one statement where UPDATE … RETURNING exists; on MySQL, in one transaction,
        # `due_ids` locks the rows, `lease_ids` leases them and `leased_rows` reads them back
        self.lease = Template(f"UPDATE {t} SET {lease_set} WHERE id IN ({self.due_ids}) RETURNING {self.lease_columns}")
        self.lease_ids = Template(f"UPDATE {t} SET {lease_set} WHERE id IN ({{ids}})")
        self.leased_rows = Template(f"SELECT {self.lease_columns} FROM {t} WHERE id IN ({{ids}})")

        self.heartbeat = Template(
            f"UPDATE {t} SET lease_expires_at = {d.now_plus()}, updated_at = {d.now} WHERE {OWNER_FENCE}"
        )
        fence = LEASE_FENCE
        # PostgreSQL: a final write NOTIFYs the table's ``done`` channel for `gta_core.wait`, in
        # the statement itself (no round trip; one notification per transaction, as the payload
        # is the same), delivered on commit
        self.done_channel = f"gta_{t}_done"
        self.notify_done = f"pg_notify('{self.done_channel}', '')" if d.name == "postgres" else ""
        done = f" RETURNING {self.notify_done}" if self.notify_done else ""
        self.complete = fx(f"UPDATE {t} SET status = 'succeeded', finished_at = {d.now}, updated_at = {d.now}, "
                           f"lease_expires_at = NULL WHERE {fence}{done}")
        many_fence = OWNER_FENCE + "{leases}"
        self.lease_pairs = Template(" AND (id, attempts) IN ({rows})")
        self.complete_many = Template(
            f"UPDATE {t} SET status = 'succeeded', finished_at = {d.now}, updated_at = {d.now}, "
            f"lease_expires_at = NULL WHERE {many_fence}"
        )
        # MySQL has no UPDATE … RETURNING: `complete_many` reads which rows the fence matches
        # without locking them, updates those rows alone, and only when fewer changed reads
        # back which are now this lease's success. Neither a locking read nor an update of
        # every id given: on MariaDB both keep the lock of a row they read by id that fails the
        # rest of their condition, so a stale write locked the row of the worker that had taken
        # the task over, whose heartbeats then waited for as long as the stale writer's host
        # stayed cut off with its transaction open.
        self.owned_ids = Template(f"SELECT id FROM {t} WHERE {many_fence}")
        self.succeeded_ids = Template(
            f"SELECT id FROM {t} WHERE lease_owner = ? AND status = 'succeeded' AND id IN ({{ids}})"
        )
        self.complete_many_returning = Template(f"{self.complete_many} RETURNING id" + (
            f", {self.notify_done}" if self.notify_done else ""))
        # PostgreSQL's: one text for any batch, so it is prepared once (planning an IN list of
        # the batch's ids and (id, attempt) pairs took as long as running it); a NULL attempt
        # fences on owner and status only, as in `LEASE_FENCE`
        self.complete_many_arrays = (
            f"UPDATE {t} SET status = 'succeeded', finished_at = {d.now}, updated_at = {d.now}, "
            f"lease_expires_at = NULL FROM unnest($1::bigint[], $2::integer[]) AS lease(id, attempt) "
            f"WHERE {t}.id = lease.id AND {t}.lease_owner = $3 AND {t}.status = 'running' "
            f"AND {t}.attempts = COALESCE(lease.attempt, {t}.attempts) RETURNING {t}.id, {self.notify_done or 'NULL'}")
        self.retry = fx(f"UPDATE {t} SET status = 'pending', run_at = {d.now_plus()}, last_error = ?, "
                        f"lease_owner = NULL, lease_expires_at = NULL, updated_at = {d.now} WHERE {fence}")
        self.fail = fx(f"UPDATE {t} SET status = 'failed', finished_at = {d.now}, last_error = ?, "
                       f"lease_expires_at = NULL, updated_at = {d.now} WHERE {fence}{done}")
        release_set = (f"status = 'pending', attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, "
                       f"lease_owner = NULL, lease_expires_at = NULL, updated_at = {d.now}")
        # A task given back is due again at once: on PostgreSQL the release NOTIFYs its queue as a
        # submit does, in the statement, so idle workers on every host take it now (elsewhere the
        # worker giving it back pokes this host's supervisors, `Leaser.give_back`).
        woken = f" RETURNING pg_notify('gta_{t}', queue)" if d.name == "postgres" else ""
        self.release_ids = Template(f"UPDATE {t} SET {release_set} WHERE {OWNER_FENCE}{woken}")
        self.release_lease = fx(f"UPDATE {t} SET {release_set} WHERE {fence}{woken}")
        self.owned = fx(f"SELECT {returning} FROM {t} WHERE lease_owner = ? AND status = 'running'")
        self.cancel_pending = Template(
            f"UPDATE {t} SET status = 'cancelled', finished_at = {d.now}, updated_at = {d.now}, "
            "last_error = ? WHERE status = 'pending' AND id IN ({ids})" + done
        )
        # a running task keeps its lease_owner so its worker can tell it was cancelled
        self.cancel_running = Template(
            f"UPDATE {t} SET status = 'cancelled', finished_at = {d.now}, updated_at = {d.now}, "
            "lease_expires_at = NULL, last_error = ? WHERE status = 'running' "
            "AND id IN ({ids})" + done
        )
        self.cancelled_of_owner = (Template("SELECT id, last_error FROM " + t + " WHERE lease_owner = ? "
                                   "AND status = 'cancelled' AND id IN ({ids})"))

        self.expired = f"status = 'running' AND lease_expires_at < {d.now}"
        # rescue reads expired leases, asks the retry policy about each (`outcomes.decide`), then
        # writes each outcome, one short transaction per row, fenced on the lease it read and on
        # its still being expired: a task its worker renewed, finished or gave back meanwhile is
        # left alone, and one whose row another transaction holds is left for the next round
        self.expired_leases = fx(f"SELECT {returning} FROM {t} WHERE {self.expired} "
                                 "ORDER BY lease_expires_at LIMIT ?")
        still_expired = f"{fence} AND lease_expires_at < {d.now}"
        # one expired lease, locked for its rescue unless a transaction in flight holds it (a
        # silent host's, its worker's outcome write): rescue never waits on a row lock
        self.rescue_lock = fx(f"SELECT id FROM {t} WHERE {still_expired}{skip_locked}")
        self.rescue_retry = fx(f"UPDATE {t} SET status = 'pending', run_at = {d.now_plus()}, last_error = ?, "
                               f"lease_owner = NULL, lease_expires_at = NULL, updated_at = {d.now} "
                               f"WHERE {still_expired}")
        self.rescue_fail = fx(f"UPDATE {t} SET status = 'failed', finished_at = {d.now}, last_error = ?, "
                              f"lease_owner = NULL, lease_expires_at = NULL, updated_at = {d.now} "
                              f"WHERE {still_expired}{done}")
        self.get = fx(f"SELECT {self.all_columns} FROM {t} WHERE id = ?")
        self.statuses = Template(f"SELECT id, status FROM {t} WHERE id IN ({{ids}})")
        # cancel's read: the rows stay as read until its writes (SQLite: BEGIN IMMEDIATE), so
        # what it reports having done is what it did; in id order, as two cancels lock alike
        self.statuses_locked = Template(f"{self.statuses} ORDER BY id" + ("" if d.name == "sqlite" else " FOR UPDATE"))
        self.drop = [f"DROP TABLE IF EXISTS {t}{suffix}"
                     for suffix in ("", "_schema", "_queues", "_groups", "_limits", "_supervisors", "_attempts")]
        self.count_by_status = f"SELECT queue, status, COUNT(*) FROM {t} GROUP BY queue, status"
        # Metrics gauges: each reads only pending or only running rows, through the partial
        # indexes (status-leading ones on MySQL), so finished rows never add to their cost.
        # The parameter is minus the abnormal threshold in seconds.
        # By queue and task key (the roster's check of which due tasks no live supervisor
        # handles reads the same groups): pending, oldest due run_at, due longer than the
        # threshold, due now, and the database's now.
        self.pending_by_key = fx(
            f"SELECT queue, {k}, COUNT(*), MIN(CASE WHEN run_at <= {d.now} THEN run_at END), "
            f"SUM(CASE WHEN run_at <= {d.now_plus()} THEN 1 ELSE 0 END), "
            f"SUM(CASE WHEN run_at <= {d.now} THEN 1 ELSE 0 END), {d.now} "
            f"FROM {t}{d.through(t, 'lease')} WHERE status = 'pending' GROUP BY queue, {k}")
        # Through the waiting index (the lease index on MySQL/MariaDB).
        self.waiting_summary = f"SELECT queue, COUNT(*) FROM {t} WHERE status = 'waiting' GROUP BY queue"
        self.running_summary = fx(
            f"SELECT queue, COUNT(*), SUM(CASE WHEN started_at <= {d.now_plus()} THEN 1 ELSE 0 END) "
            f"FROM {t} WHERE status = 'running' GROUP BY queue")

    def known_keys(self, keys: Sequence[str]) -> tuple[str, tuple[str, ...]]:
        """The ``{keys}`` part of `due` for a worker with handlers for ``keys``, and its parameters:
        `` AND (key IN (?, …) OR substr(key, 1, n) = ? …)``, a family ``prefix:*`` matching every
        key that begins with ``prefix:`` (keys are ASCII, so its length in characters is in bytes)."""
        key = self.dialect.exact(self.dialect.q("key"))
        exact = tuple(name for name in keys if family_prefix(name) is None)
        prefixes = tuple(prefix for name in keys if (prefix := family_prefix(name)) is not None)
        tests = [f"{key} IN ({', '.join('?' * len(exact))})"] if exact else []
        tests += [f"substr({key}, 1, {len(prefix)}) = ?" for prefix in prefixes]
        return f" AND ({' OR '.join(tests)})", exact + prefixes

    def add_column(self, name: str) -> str:
        return f"ALTER TABLE {self.table} ADD COLUMN {self.dialect.q(name)} {self.columns[name]}"

    def bulk_insert(self, varying: tuple[bool, ...]) -> str:
        """PostgreSQL's many-row insert, for the columns of `BULK_COLUMNS`: ``varying`` says which
        differ between the rows. Its parameters: the shared value of each column that does not
        vary, then an array of each one that does (both in `BULK_COLUMNS` order), or the row
        count when none does. It parses and plans in constant time, where a VALUES list costs the
        planner every expression of every row (most of a 500-row insert's time), and a batch
        of one task's rows adapts only the arrays of what differs, often the arguments alone."""
        statement = self._bulk_inserts.get(varying)
        if statement is None:
            arrays, names, value = [], [], {}
            for (name, kind), varies in zip(BULK_COLUMNS, varying, strict=True):
                if varies:
                    arrays.append(f"?::{kind}[]")
                    names.append(name)
                value[name] = f"rows.{name}" if varies else f"?::{kind}"
            source = (f"unnest({', '.join(arrays)}) AS rows ({', '.join(names)})" if arrays
                      else "generate_series(1, ?) AS rows")
            now = self.dialect.now
            statement = self.dialect.fix(
                f"{self.insert_prefix.replace(' VALUES ', ' ')}"
                f"SELECT {value['key']}, {value['queue']}, 'pending', {value['priority']}, {value['args']}, "
                f"{value['context']}, COALESCE({value['run_at']}, {now} + {value['delay']} * INTERVAL '1 second'), "
                f"0, {value['max_attempts']}, {value['dedupe_key']}, {value['order_key']}, {value['parent_id']}, "
                f"{now}, {now} FROM {source}")
            self._bulk_inserts[varying] = statement
        return statement


#: what a PostgreSQL bulk insert passes per row (`Statements.bulk_insert`), with its SQL type
BULK_COLUMNS = (("key", "varchar"), ("queue", "varchar"), ("priority", "int"), ("args", "text"),
                ("context", "text"), ("run_at", "timestamp"), ("delay", "float8"), ("max_attempts", "int"),
                ("dedupe_key", "varchar"), ("order_key", "varchar"), ("parent_id", "bigint"))


@functools.cache
def statements(dialect_name: str, table: str) -> Statements:
    return Statements(DIALECTS[dialect_name], table)


#: ``last_error`` of a task whose lease expired and was taken back by rescue (see `rescued_error`)
RESCUED_ERROR_PREFIX = "lease expired"


def rescued_error(owner: str | None) -> str:
    """The ``last_error`` rescue writes for a lease ``owner`` let expire."""
    return f"{RESCUED_ERROR_PREFIX}: worker {owner} stopped renewing it"


#: ``last_error`` prefix of a task an operator put back to pending with ``gta retry``
RERUN_ERROR_PREFIX = "retried by an operator; previous error: "
