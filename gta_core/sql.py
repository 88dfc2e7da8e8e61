"""Every statement GTA sends, per dialect, built once per (dialect, table).

Statements are written with ``?`` placeholders and converted to the driver's style. The
clock is the database's where it has one (PostgreSQL, MySQL/MariaDB), so a host with a
skewed clock cannot steal live leases; SQLite, a single-host database, uses functions that
GTA registers on each connection (``gta_now()``, ``gta_now_plus(seconds)``).
"""
from __future__ import annotations

import functools

SCHEMA_VERSION = 1

TASK_COLUMNS = ("id", "key", "queue", "args", "context", "attempts", "max_attempts", "priority",
                "run_at", "status", "lease_owner", "last_error", "created_at")
ALL_COLUMNS = TASK_COLUMNS + ("lease_expires_at", "dedupe_key", "order_key", "parent_id",
                              "updated_at", "started_at", "finished_at")
FINAL_STATUSES = ("succeeded", "failed", "cancelled")


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

    def fix(self, sql: str) -> str:
        """Turn ``?`` placeholders into the driver's."""
        return sql if self.param == "?" else sql.replace("?", self.param)


class SqliteDialect(Dialect):
    name = "sqlite"
    now = "gta_now()"
    id_column = "id INTEGER PRIMARY KEY AUTOINCREMENT"
    timestamp = "TEXT"

    def now_plus(self) -> str:
        return "gta_now_plus(?)"


class PostgresDialect(Dialect):
    name = "postgres"
    param = "%s"
    # statement_timestamp() is stable within a statement, so indexes can use it (clock_timestamp() can't)
    now = "(statement_timestamp() AT TIME ZONE 'UTC')"
    id_column = "id BIGSERIAL PRIMARY KEY"

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
            f"CREATE UNIQUE INDEX {t}_dedupe ON {t} (dedupe_key)",
            f"CREATE INDEX {t}_order ON {t} (order_key, id)",
            f"CREATE INDEX {t}_finished ON {t} (finished_at)",
            f"CREATE INDEX {t}_parent ON {t} (parent_id)",
        ]
        self.schema_version = f"SELECT MAX(version) FROM {t}_schema"
        self.set_schema_version = fx(f"INSERT INTO {t}_schema (version) VALUES (?)")

        insert_columns = (f"{k}, queue, status, priority, args, context, run_at, attempts, max_attempts, "
                          "dedupe_key, order_key, parent_id, created_at, updated_at")
        self.insert_row_delay = f"(?, ?, 'pending', ?, ?, ?, {d.now_plus()}, 0, ?, ?, ?, ?, {d.now}, {d.now})"
        self.insert_row_at = f"(?, ?, 'pending', ?, ?, ?, ?, 0, ?, ?, ?, ?, {d.now}, {d.now})"
        self.insert_prefix = f"INSERT INTO {t} ({insert_columns}) VALUES "
        self.notify = fx("SELECT pg_notify(?, ?)")
        # dedupe: insert unless a row with this dedupe_key is kept, then read the kept row's id
        self.insert_or_skip = ("ON DUPLICATE KEY UPDATE id = id" if d.name == "mysql"
                               else "ON CONFLICT (dedupe_key) DO NOTHING")
        self.id_by_dedupe_key = fx(f"SELECT id FROM {t} WHERE dedupe_key = ?")

        lease_set = (f"status = 'running', lease_owner = ?, attempts = attempts + 1, "
                     f"lease_expires_at = {d.now_plus()}, started_at = {d.now}, updated_at = {d.now}")
        self.lease_set = lease_set
        # FIFO per order_key: only the oldest unfinished task of a key is ever due, so tasks
        # sharing a key run one at a time in submission (id) order; a task that ended for
        # good (succeeded, failed, cancelled) no longer holds the rest back.
        self.due = (f"status = 'pending' AND queue IN ({{queues}}) AND run_at <= {d.now} "
                    f"AND (order_key IS NULL OR NOT EXISTS (SELECT 1 FROM {t} prior "
                    f"WHERE prior.order_key = {t}.order_key AND prior.id < {t}.id "
                    "AND prior.status IN ('pending', 'running')))")
        self.lease_order = "ORDER BY priority DESC, run_at, id"

        self.heartbeat = (f"UPDATE {t} SET lease_expires_at = {d.now_plus()}, updated_at = {d.now} "
                          "WHERE lease_owner = ? AND status = 'running' AND id IN ({ids})")
        fence = "id = ? AND lease_owner = ? AND status = 'running'"
        self.complete = fx(f"UPDATE {t} SET status = 'succeeded', finished_at = {d.now}, updated_at = {d.now}, "
                           f"lease_expires_at = NULL WHERE {fence}")
        self.complete_and_delete = fx(f"DELETE FROM {t} WHERE {fence}")
        self.retry = fx(f"UPDATE {t} SET status = 'pending', run_at = {d.now_plus()}, last_error = ?, "
                        f"lease_owner = NULL, lease_expires_at = NULL, updated_at = {d.now} WHERE {fence}")
        self.fail = fx(f"UPDATE {t} SET status = 'failed', finished_at = {d.now}, last_error = ?, "
                       f"lease_expires_at = NULL, updated_at = {d.now} WHERE {fence}")
        release_set = (f"status = 'pending', attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, "
                       f"lease_owner = NULL, lease_expires_at = NULL, updated_at = {d.now}")
        self.release_ids = (f"UPDATE {t} SET {release_set} "
                            "WHERE lease_owner = ? AND status = 'running' AND id IN ({ids})")
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


@functools.cache
def statements(dialect_name: str, table: str) -> Statements:
    return Statements(DIALECTS[dialect_name], table)
