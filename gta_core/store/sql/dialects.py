"""SQL fragments that differ between databases (`Dialect`, one subclass per database), and the
upgrades each dialect's table goes through between schema versions. `store.sql.statements.Statements` builds the
engine's statements from them.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence


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
    #: the connection's database and whether a table of the name given is there (on SQLite the
    #: attached databases' files: `gta_core.handles.connection.where_answer`)
    database_and_table = ""
    #: rows per insert statement (SQLite allows 32,766 parameters, an insert row takes 10)
    insert_chunk = 500
    #: what serializes concurrent `gta migrate` runs (one parameter: a lock name), and its release
    migration_lock = ""
    migration_unlock = ""

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

    def through(self, table: str, index: str) -> str:
        """What makes a statement read ``table`` through its index ``<table>_<index>`` where the
        planner might scan the whole table instead (nothing: the partial indexes decide)."""
        return ""

    def exact(self, column: str) -> str:
        """``column`` compared byte for byte, as Python compares strings."""
        return column

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

    def group_index(self, table: str) -> str:
        """For a group's outcomes (`sql.workflows`), read once when its last member is final."""
        return f"CREATE INDEX {table}_group ON {table} (group_id)" + self.partial("group_id IS NOT NULL")

    def waiting_index(self, table: str) -> str | None:
        """For the count of ``waiting`` rows (group callbacks, chain steps waiting for their
        turn) by queue, which the metrics read on every scrape: None where another index has it."""
        return f"CREATE INDEX {table}_waiting ON {table} (queue)" + self.partial("status = 'waiting'")

    #: how an insert skips a row whose dedupe key is taken (the conflict target names the partial index)
    insert_or_skip = "ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING"

    def drop_index(self, table: str, name: str) -> str:
        return f"DROP INDEX {table}_{name}"

    def indexes(self, table: str) -> dict[str, str]:
        """Each index of the task table (named ``<table>_<key>``) with the statement creating it."""
        return {"lease": self.lease_index(table), "expiry": self.expiry_index(table), "owner": self.owner_index(table),
                "dedupe": self.dedupe_index(table), "order": self.order_index(table),
                "finished": self.finished_index(table), "parent": self.parent_index(table),
                "group": self.group_index(table),
                **({"waiting": waiting} if (waiting := self.waiting_index(table)) else {})}

    def skip_existing(self, key: str) -> str:
        """How an insert leaves a row alone whose primary ``key`` is taken."""
        return f"ON CONFLICT ({key}) DO NOTHING"

    def update_existing(self, key: str, columns: Sequence[str]) -> str:
        """How an insert whose primary ``key`` is taken writes its ``columns`` over that row's."""
        return f"ON CONFLICT ({key}) DO UPDATE SET " + ", ".join(f"{column} = excluded.{column}" for column in columns)

    def upgrades(self, table: str) -> dict[int, list[str]]:
        """Statements that bring a table from the version before each key to that version.

        Each upgrade must leave the table usable by the previous version's processes, which run
        on during a rolling upgrade. Version 1 inserts with ``ON CONFLICT (dedupe_key)``, which
        only a full unique index answers (a partial one needs the ``WHERE`` of version 2), so the
        upgrade to 2 keeps one beside the partial index: ``<table>_dedupe_v1``, to be dropped
        once no version 1 process is left (docs/operations.md).
        """
        return {2: [f"CREATE UNIQUE INDEX {table}_dedupe_v1 ON {table} (dedupe_key)",
                    *(statement for name, create in (("order", self.order_index), ("dedupe", self.dedupe_index),
                                                     ("finished", self.finished_index), ("parent", self.parent_index))
                      for statement in (self.drop_index(table, name), create(table)))]}

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
    # reads nothing: a SELECT, even of pragma_database_list, would start the caller's read transaction
    database_and_table = "PRAGMA database_list"
    now = "gta_now()"
    id_column = "id INTEGER PRIMARY KEY AUTOINCREMENT"
    timestamp = "TEXT"

    def now_plus(self) -> str:
        return "gta_now_plus(?)"

    def row_list(self, count: int) -> str:
        return "VALUES " + super().row_list(count)  # SQLite's row-value IN takes a subquery only


class PostgresDialect(Dialect):
    name = "postgres"
    database_and_table = "SELECT current_database(), to_regclass(?) IS NOT NULL"
    param = "%s"
    # statement_timestamp() is stable within a statement, so indexes can use it (clock_timestamp() can't)
    now = "(statement_timestamp() AT TIME ZONE 'UTC')"
    id_column = "id BIGSERIAL PRIMARY KEY"
    insert_chunk = 5000  # `Statements.bulk_insert` takes a parameter per column, not per value
    migration_lock = "SELECT pg_advisory_xact_lock(hashtext(?))"  # released with the transaction

    def now_plus(self) -> str:
        return f"({self.now} + ? * INTERVAL '1 second')"

    def upgrades(self, table: str) -> dict[int, list[str]]:
        """As `Dialect.upgrades`, but version 1's own full unique index is renamed to
        ``<table>_dedupe_v1`` rather than rebuilt: no second scan of a big table, and a version 1
        insert planned against that index (its object id) keeps it as the arbiter of its
        ``ON CONFLICT`` whatever it has been renamed to."""
        rebuilt = super().upgrades(table)[2][1:]  # without the second full index
        return {2: [f"ALTER INDEX {table}_dedupe RENAME TO {table}_dedupe_v1",
                    *(statement for statement in rebuilt if statement != self.drop_index(table, "dedupe"))]}


class MySQLDialect(Dialect):
    name = "mysql"
    database_and_table = ("SELECT DATABASE(), (SELECT COUNT(*) FROM information_schema.tables "
                          "WHERE table_schema = DATABASE() AND table_name = ?)")
    param = "%s"
    quote = "`"
    now = "UTC_TIMESTAMP(6)"
    id_column = "id BIGINT AUTO_INCREMENT PRIMARY KEY"
    timestamp = "DATETIME(6)"
    text = "MEDIUMTEXT"
    table_options = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
    insert_returns_ids = False
    migration_lock = "SELECT GET_LOCK(?, 60)"  # DDL commits implicitly: a named lock, not a transaction's
    migration_unlock = "SELECT RELEASE_LOCK(?)"

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

    def waiting_index(self, table: str) -> str | None:
        return None  # the lease index leads with (status, queue)

    def exact(self, column: str) -> str:
        # utf8mb4_bin pads: 'record ' = 'record', and a worker would lease a key it has no handler for
        return f"CAST({column} AS BINARY)"

    def through(self, table: str, index: str) -> str:
        # a status-leading index that does not cover the statement looks, to MariaDB's planner,
        # like a third of the table (three statuses), and it scans every finished row instead
        return f" FORCE INDEX ({table}_{index})"

    def partial(self, condition: str) -> str:
        return ""  # no partial indexes: NULLs are indexed too (and rows without a key never collide)

    insert_or_skip = "ON DUPLICATE KEY UPDATE id = id"

    def drop_index(self, table: str, name: str) -> str:
        return f"DROP INDEX {table}_{name} ON {table}"

    def skip_existing(self, key: str) -> str:
        return f"ON DUPLICATE KEY UPDATE {key} = {key}"

    def update_existing(self, key: str, columns: Sequence[str]) -> str:
        return "ON DUPLICATE KEY UPDATE " + ", ".join(f"{column} = VALUES({column})" for column in columns)

    def upgrades(self, table: str) -> dict[int, list[str]]:
        return {2: [self.drop_index(table, "order"), self.order_index(table)]}


DIALECTS = {"sqlite": SqliteDialect(), "postgres": PostgresDialect(), "mysql": MySQLDialect()}
