"""Every statement GTA sends, per dialect, built once per (dialect, table).

Statements are written with ``?`` placeholders and converted to the driver's style. The
clock is the database's where it has one (PostgreSQL, MySQL/MariaDB), so a host with a
skewed clock cannot steal live leases; SQLite, a single-host database, uses functions that
GTA registers on each connection (``gta_now()``, ``gta_now_plus(seconds)``).
"""
from __future__ import annotations

import functools

SCHEMA_VERSION = 2

TASK_COLUMNS = ("id", "key", "queue", "args", "context", "attempts", "max_attempts", "priority",
                "run_at", "status", "lease_owner", "last_error", "created_at")
ALL_COLUMNS = TASK_COLUMNS + ("lease_expires_at", "dedupe_key", "order_key", "parent_id",
                              "updated_at", "started_at", "finished_at")
FINAL_STATUSES = ("succeeded", "failed", "cancelled")
#: the last fields of TaskRecord, left at None in a leased record (see `Statements.lease_columns`)
LEASE_SKIPS = ("last_error", "created_at")


class Dialect:
    """SQL fragments that differ between databases."""

    name = "base"
    param = "?"
    quote = '"'
    now = ""
    id_column = ""
    timestamp = "TIMESTAMP(6)"
    text = "TEXT"
    table_options = ""
    insert_returns_ids = True
    #: rows per insert statement (SQLite allows 32,766 parameters, an insert row takes 10)
    insert_chunk = 500

    def now_plus(self) -> str:
        """The database clock plus one parameter of seconds."""
        raise NotImplementedError

    def seconds_param(self, seconds: float) -> float | int:
        return seconds

    def concat(self, *parts: str) -> str:
        return " || ".join(parts)

    def q(self, name: str) -> str:
        return f"{self.quote}{name}{self.quote}"

    def partial(self, condition: str) -> str:
        return f" WHERE {condition}"

    def lease_index(self, table: str) -> str:
        return (f"CREATE INDEX {table}_lease ON {table} (queue, priority DESC, run_at, id)"
                + self.partial("status = 'pending'"))

    def expiry_index(self, table: str) -> str:
        return f"CREATE INDEX {table}_expiry ON {table} (lease_expires_at)" + self.partial("status = 'running'")

    def owner_index(self, table: str) -> str:
        return f"CREATE INDEX {table}_owner ON {table} (lease_owner)" + self.partial("status = 'running'")

    def order_index(self, table: str) -> str:
        """For the FIFO check in `Statements.due`: a key's finished rows must not be scanned."""
        return (f"CREATE INDEX {table}_order ON {table} (order_key, id)"
                + self.partial("order_key IS NOT NULL AND status IN ('pending', 'running')"))

    # Columns most rows leave NULL are indexed only where set: a row's insert, lease and
    # completion then write no entries there (each write of a row otherwise adds one to every
    # index). Queries on them (``= ?``, ``< ?``) imply IS NOT NULL, so the planners use them.
    def dedupe_index(self, table: str) -> str:
        return f"CREATE UNIQUE INDEX {table}_dedupe ON {table} (dedupe_key)" + self.partial("dedupe_key IS NOT NULL")

    def finished_index(self, table: str) -> str:
        return f"CREATE INDEX {table}_finished ON {table} (finished_at)" + self.partial("finished_at IS NOT NULL")

    def parent_index(self, table: str) -> str:
        return f"CREATE INDEX {table}_parent ON {table} (parent_id)" + self.partial("parent_id IS NOT NULL")

    #: how an insert skips a row whose dedupe key is taken (the conflict target names the partial index)
    insert_or_skip = "ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING"

    def drop_index(self, table: str, name: str) -> str:
        return f"DROP INDEX {table}_{name}"

    def skip_existing(self, key: str) -> str:
        """How an insert leaves a row alone whose primary ``key`` is taken."""
        return f"ON CONFLICT ({key}) DO NOTHING"

    def upgrades(self, table: str) -> dict[int, list[str]]:
        """Statements that bring a table from the version before each key to that version."""
        return {2: [statement for name, create in (("order", self.order_index), ("dedupe", self.dedupe_index),
                                                   ("finished", self.finished_index), ("parent", self.parent_index))
                    for statement in (self.drop_index(table, name), create(table))]}

    def row_list(self, count: int) -> str:
        """``count`` rows of two parameters, the right side of ``(a, b) IN (…)``."""
        return ", ".join(["(?, ?)"] * count)

    def fix(self, sql: str) -> str:
        """Turn ``?`` placeholders into the driver's."""
        return sql if self.param == "?" else sql.replace("?", self.param)


@functools.cache
def numbered(statement: str) -> str:
    """A statement's ``?`` placeholders as PostgreSQL's ``$1``, ``$2``, …, which PREPARE takes."""
    first, *rest = statement.split("?")
    return first + "".join(f"${number}{part}" for number, part in enumerate(rest, 1))


class SqliteDialect(Dialect):
    name = "sqlite"
    now = "gta_now()"
    id_column = "id INTEGER PRIMARY KEY AUTOINCREMENT"
    timestamp = "TEXT"

    def now_plus(self) -> str:
        return "gta_now_plus(?)"

    def row_list(self, count: int) -> str:
        return "VALUES " + super().row_list(count)  # SQLite's row-value IN takes a subquery only


class PostgresDialect(Dialect):
    name = "postgres"
    param = "%s"
    # statement_timestamp() is stable within a statement, so indexes can use it (clock_timestamp() can't)
    now = "(statement_timestamp() AT TIME ZONE 'UTC')"
    id_column = "id BIGSERIAL PRIMARY KEY"
    insert_chunk = 5000  # `Statements.bulk_insert` takes a parameter per column, not per value

    def now_plus(self) -> str:
        return f"({self.now} + ? * INTERVAL '1 second')"


class MySQLDialect(Dialect):
    name = "mysql"
    param = "%s"
    quote = "`"
    now = "UTC_TIMESTAMP(6)"
    id_column = "id BIGINT AUTO_INCREMENT PRIMARY KEY"
    timestamp = "DATETIME(6)"
    text = "MEDIUMTEXT"
    table_options = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
    insert_returns_ids = False

    def now_plus(self) -> str:
        return "(UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND)"

    def seconds_param(self, seconds: float) -> int:
        return int(round(seconds * 1_000_000))

    def concat(self, *parts: str) -> str:
        return f"CONCAT({', '.join(parts)})"

    # MySQL/MariaDB have no partial indexes: lead with status so finished rows sit in
    # their own range and never slow down leasing or rescue.
    def lease_index(self, table: str) -> str:
        return f"CREATE INDEX {table}_lease ON {table} (status, queue, priority DESC, run_at, id)"

    def expiry_index(self, table: str) -> str:
        return f"CREATE INDEX {table}_expiry ON {table} (status, lease_expires_at)"

    def owner_index(self, table: str) -> str:
        return f"CREATE INDEX {table}_owner ON {table} (status, lease_owner)"

    def order_index(self, table: str) -> str:
        return f"CREATE INDEX {table}_order ON {table} (order_key, status, id)"

    def partial(self, condition: str) -> str:
        return ""  # no partial indexes: NULLs are indexed too (and rows without a key never collide)

    insert_or_skip = "ON DUPLICATE KEY UPDATE id = id"

    def drop_index(self, table: str, name: str) -> str:
        return f"DROP INDEX {table}_{name} ON {table}"

    def skip_existing(self, key: str) -> str:
        return f"ON DUPLICATE KEY UPDATE {key} = {key}"

    def upgrades(self, table: str) -> dict[int, list[str]]:
        return {2: [self.drop_index(table, "order"), self.order_index(table)]}


DIALECTS = {"sqlite": SqliteDialect(), "postgres": PostgresDialect(), "mysql": MySQLDialect()}


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
        self.create = [
            f"CREATE TABLE {t}_schema (version INTEGER NOT NULL){d.table_options}",
            f"""CREATE TABLE {t} (
                {d.id_column},
                {k} VARCHAR(191) NOT NULL,
                queue VARCHAR(191) NOT NULL,
                status VARCHAR(16) NOT NULL,
                priority INTEGER NOT NULL DEFAULT 0,
                args {tx} NOT NULL,
                context {tx} NULL,
                run_at {ts} NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                max_attempts INTEGER NOT NULL,
                lease_owner VARCHAR(191) NULL,
                lease_expires_at {ts} NULL,
                dedupe_key VARCHAR(191) NULL,
                order_key VARCHAR(191) NULL,
                parent_id BIGINT NULL,
                last_error {tx} NULL,
                created_at {ts} NOT NULL,
                updated_at {ts} NOT NULL,
                started_at {ts} NULL,
                finished_at {ts} NULL
            ){d.table_options}""",
            d.lease_index(t),
            d.expiry_index(t),
            d.owner_index(t),
            d.dedupe_index(t),
            d.order_index(t),
            d.finished_index(t),
            d.parent_index(t),
        ]
        # Queue controls (`gta pause`): one row per queue ever paused, `paused` while it is. Its
        # own table, created by `gta migrate` at the same schema version: a supervisor that
        # predates it never reads it, and the task table's rows and indexes stay as they were.
        self.queues_table = f"{t}_queues"
        self.create_queues = (f"CREATE TABLE {t}_queues (name VARCHAR(191) NOT NULL PRIMARY KEY, "
                              f"paused BOOLEAN NOT NULL, changed_at {ts} NOT NULL, changed_by VARCHAR(191) NULL, "
                              f"reason {tx} NULL){d.table_options}")
        self.create.append(self.create_queues)
        self.schema_version = f"SELECT MAX(version) FROM {t}_schema"
        self.set_schema_version = fx(f"INSERT INTO {t}_schema (version) VALUES (?)")

        insert_columns = (f"{k}, queue, status, priority, args, context, run_at, attempts, max_attempts, "
                          "dedupe_key, order_key, parent_id, created_at, updated_at")
        self.insert_row_delay = f"(?, ?, 'pending', ?, ?, ?, {d.now_plus()}, 0, ?, ?, ?, ?, {d.now}, {d.now})"
        self.insert_row_at = f"(?, ?, 'pending', ?, ?, ?, ?, 0, ?, ?, ?, ?, {d.now}, {d.now})"
        self.insert_prefix = f"INSERT INTO {t} ({insert_columns}) VALUES "
        self.notify = fx("SELECT pg_notify(?, ?)")
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
        self.id_by_dedupe_key = fx(f"SELECT id FROM {t} WHERE dedupe_key = ?")

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
        self.due = (f"status = 'pending' AND queue IN ({{queues}}) "
                    f"AND queue NOT IN (SELECT name FROM {t}_queues WHERE paused) AND run_at <= {d.now} "
                    f"AND (order_key IS NULL OR NOT EXISTS (SELECT 1 FROM {t} prior "
                    f"WHERE prior.order_key = {t}.order_key AND prior.id < {t}.id "
                    "AND prior.status IN ('pending', 'running')))")
        self.lease_order = "ORDER BY priority DESC, run_at, id"

        self.heartbeat = (f"UPDATE {t} SET lease_expires_at = {d.now_plus()}, updated_at = {d.now} "
                          "WHERE lease_owner = ? AND status = 'running' AND id IN ({ids})")
        # The fence of an outcome write: this lease, not only this owner. A worker stopped past its
        # lease may lease the same task again (same owner) while the stale run goes on; every
        # lease counts an attempt, so the attempt number tells the two apart. A NULL attempt
        # (operator tools and tests that hold no lease record) fences on owner and status only.
        fence = "id = ? AND lease_owner = ? AND status = 'running' AND attempts = COALESCE(?, attempts)"
        self.complete = fx(f"UPDATE {t} SET status = 'succeeded', finished_at = {d.now}, updated_at = {d.now}, "
                           f"lease_expires_at = NULL WHERE {fence}")
        self.complete_and_delete = fx(f"DELETE FROM {t} WHERE {fence}")
        many_fence = "lease_owner = ? AND status = 'running' AND id IN ({ids}){leases}"
        self.lease_pairs = " AND (id, attempts) IN ({rows})"
        self.complete_many = (f"UPDATE {t} SET status = 'succeeded', finished_at = {d.now}, updated_at = {d.now}, "
                              f"lease_expires_at = NULL WHERE {many_fence}")
        self.lock_owned_ids = f"SELECT id FROM {t} WHERE {many_fence} FOR UPDATE"
        # PostgreSQL's: one text for any batch, so it is prepared once (planning an IN list of
        # the batch's ids and (id, attempt) pairs took as long as running it); a NULL attempt
        # fences on owner and status only, as in `fence`
        self.complete_many_arrays = (
            f"UPDATE {t} SET status = 'succeeded', finished_at = {d.now}, updated_at = {d.now}, "
            f"lease_expires_at = NULL FROM unnest($1::bigint[], $2::integer[]) AS lease(id, attempt) "
            f"WHERE {t}.id = lease.id AND {t}.lease_owner = $3 AND {t}.status = 'running' "
            f"AND {t}.attempts = COALESCE(lease.attempt, {t}.attempts) RETURNING {t}.id")
        self.retry = fx(f"UPDATE {t} SET status = 'pending', run_at = {d.now_plus()}, last_error = ?, "
                        f"lease_owner = NULL, lease_expires_at = NULL, updated_at = {d.now} WHERE {fence}")
        self.fail = fx(f"UPDATE {t} SET status = 'failed', finished_at = {d.now}, last_error = ?, "
                       f"lease_expires_at = NULL, updated_at = {d.now} WHERE {fence}")
        release_set = (f"status = 'pending', attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, "
                       f"lease_owner = NULL, lease_expires_at = NULL, updated_at = {d.now}")
        self.release_ids = (f"UPDATE {t} SET {release_set} "
                            "WHERE lease_owner = ? AND status = 'running' AND id IN ({ids})")
        self.release_lease = fx(f"UPDATE {t} SET {release_set} WHERE {fence}")
        self.release_owner = fx(f"UPDATE {t} SET {release_set} WHERE lease_owner = ? AND status = 'running'")
        self.owned = fx(f"SELECT {returning} FROM {t} WHERE lease_owner = ? AND status = 'running'")
        self.cancel_pending = (f"UPDATE {t} SET status = 'cancelled', finished_at = {d.now}, updated_at = {d.now}, "
                               "last_error = ? WHERE status = 'pending' AND id IN ({ids})")
        # a running task keeps its lease_owner so its worker can tell it was cancelled
        self.cancel_running = (f"UPDATE {t} SET status = 'cancelled', finished_at = {d.now}, updated_at = {d.now}, "
                               "lease_expires_at = NULL, last_error = ? WHERE status = 'running' AND id IN ({ids})")
        self.cancelled_of_owner = ("SELECT id, last_error FROM " + t + " WHERE lease_owner = ? "
                                   "AND status = 'cancelled' AND id IN ({ids})")

        self.expired = f"status = 'running' AND lease_expires_at < {d.now}"
        self.rescue_set = (
            "status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'pending' END, "
            f"finished_at = CASE WHEN attempts >= max_attempts THEN {d.now} ELSE NULL END, "
            f"last_error = {d.concat(repr('lease expired: worker '), 'lease_owner', repr(' stopped renewing it'))}, "
            f"lease_owner = NULL, lease_expires_at = NULL, updated_at = {d.now}"
        )
        self.get = fx(f"SELECT {self.all_columns} FROM {t} WHERE id = ?")
        self.count_by_status = f"SELECT queue, status, COUNT(*) FROM {t} GROUP BY queue, status"
        # Metrics gauges: each reads only pending or only running rows, through the partial
        # indexes (status-leading ones on MySQL), so finished rows never add to their cost.
        # The parameter is minus the abnormal threshold in seconds.
        self.pending_summary = fx(
            f"SELECT queue, COUNT(*), MIN(CASE WHEN run_at <= {d.now} THEN run_at END), "
            f"SUM(CASE WHEN run_at <= {d.now_plus()} THEN 1 ELSE 0 END), {d.now} "
            f"FROM {t} WHERE status = 'pending' GROUP BY queue")
        self.running_summary = fx(
            f"SELECT queue, COUNT(*), SUM(CASE WHEN started_at <= {d.now_plus()} THEN 1 ELSE 0 END) "
            f"FROM {t} WHERE status = 'running' GROUP BY queue")

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


#: ``last_error`` of a task whose lease expired and was taken back by rescue (see ``rescue_set``)
RESCUED_ERROR_PREFIX = "lease expired"
#: ``last_error`` prefix of a task an operator put back to pending with ``gta retry``
RERUN_ERROR_PREFIX = "retried by an operator; previous error: "


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
        self.latest_start = (f"SELECT MAX(started_at) FROM {t} "
                             "WHERE dedupe_key IN ({keys}) AND status = 'succeeded'")
        # Parameters: minus the threshold in seconds, then a row limit. Partial indexes (or
        # status-leading ones on MySQL) keep finished rows out of both.
        self.running_too_long = fx(f"SELECT {columns} FROM {t} WHERE status = 'running' "
                                   f"AND started_at < {d.now_plus()} ORDER BY started_at LIMIT ?")
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
        self.finished_ids = (f"SELECT id FROM {t} WHERE finished_at < {d.now_plus()} AND status IN ({{statuses}}) "
                             f"ORDER BY finished_at LIMIT ?{lock}")
        self.delete_finished = (f"DELETE FROM {t} WHERE id IN ({{ids}}) AND status IN ({{statuses}}) "
                                f"AND finished_at < {d.now_plus()}")

        # -- admin -------------------------------------------------------------------------
        self.list = f"SELECT {columns} FROM {t}{{where}} ORDER BY id DESC LIMIT ?"
        # Parameter: minus the window in seconds. finished_at is indexed.
        self.succeeded_per_queue = fx(f"SELECT queue, COUNT(*) FROM {t} WHERE finished_at >= {d.now_plus()} "
                                      "AND status = 'succeeded' GROUP BY queue")
        self.ids_with_status = fx(f"SELECT id FROM {t} WHERE status = ? AND id > ? ORDER BY id LIMIT ?")
        # GTA's ForceRerunTasks: a failed or cancelled task starts over, due now.
        previous = d.concat(repr(RERUN_ERROR_PREFIX), "COALESCE(last_error, '')")
        self.rerun = (f"UPDATE {t} SET status = 'pending', attempts = 0, run_at = {d.now}, finished_at = NULL, "
                      f"started_at = NULL, lease_owner = NULL, lease_expires_at = NULL, last_error = {previous}, "
                      f"updated_at = {d.now} WHERE id IN ({{ids}}) AND status IN ('failed', 'cancelled')")
        self.queues_of = "SELECT DISTINCT queue FROM " + t + " WHERE id IN ({ids})"

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


@functools.cache
def operation_statements(dialect_name: str, table: str) -> OperationStatements:
    return OperationStatements(DIALECTS[dialect_name], table)
