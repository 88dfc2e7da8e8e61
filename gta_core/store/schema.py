"""The task table's schema: its version, the check a process makes before it starts
(`require_schema`), and `migrate`, which creates, repairs and upgrades it. Mixed into `TaskStore`.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from ..db import sqlite_ids
from ..db.driver_errors import is_missing_table
from ..db.transactions import in_transaction
from ..errors import SchemaError
from .base import StoreBase
from .sql.attempts import attempt_statements
from .sql.limits import limit_statements
from .sql.operations import operation_statements
from .sql.statements import SCHEMA_VERSION
from .sql.workflows import workflow_statements

log = logging.getLogger("gta.store")


class SchemaQueries(StoreBase):
    """What `gta migrate` and a starting process ask of the schema."""

    def schema_version(self) -> int | None:
        """The installed schema version, or None when the table does not exist."""
        if not self.db.table_exists(f"{self.table}_schema"):
            return None
        row = self._execute(self.sql.schema_version).fetchone()
        return row[0] if row else None

    def require_schema(self) -> None:
        version = self.schema_version()
        if version != SCHEMA_VERSION:
            raise self._schema_error(version)
        tables = set(self.db.get_tables())  # one query (peewee's table_exists lists them all each time)
        for what, name, _ in self._side_tables():
            if name not in tables:
                raise SchemaError(f"task table {self.table!r} has no {what} {name!r} yet: run `gta migrate`")
        if problems := self.schema_problems(tables):
            raise SchemaError(f"task table {self.table!r} is broken ({'; '.join(problems)}): run `gta migrate`")

    def _side_tables(self) -> list[tuple[str, str, str]]:
        """The tables beside the task table, each (what it is, its name, the statement creating
        it). All were added at version 2 without a bump, so `migrate` creates whichever is
        missing, and a process refuses to start without them: leasing reads the queue controls
        and the limits, every final write of a group member counts in the groups table, every
        outcome write other than a plain success logs in the attempt log, and every supervisor
        advertises its handlers in the supervisors table."""
        workflows = workflow_statements(self.dialect, self.table)
        limits = limit_statements(self.dialect, self.table)
        attempts = attempt_statements(self.dialect, self.table)
        operations = operation_statements(self.dialect, self.table)
        return [("queue controls table", self.sql.queues_table, self.sql.create_queues),
                ("groups table", workflows.groups_table, workflows.create_groups),
                ("limits table", limits.table, limits.create),
                ("attempt log table", attempts.table, attempts.create),
                ("supervisors table", operations.roster_table, operations.create_roster)]

    def schema_problems(self, tables: set[str] | None = None) -> list[str]:
        """What the database really lacks of this version's schema: tables, columns, indexes
        (by name). The version table alone cannot tell: a table dropped by hand leaves it behind.
        ``tables``: the database's tables, if the caller has just listed them."""
        tables = set(self.db.get_tables()) if tables is None else tables
        problems = [f"table {name} is missing" for name in (f"{self.table}_schema", self.table)
                    if name not in tables]
        if problems and problems[-1].startswith(f"table {self.table} "):
            return problems
        columns = {column.name.lower() for column in self.db.get_columns(self.table)}
        problems += [f"column {name} is missing" for name in self.sql.columns if name not in columns]
        indexes = {index.name.lower() for index in self.db.get_indexes(self.table)}
        problems += [f"index {self.table}_{name} is missing" for name in self.sql.indexes
                     if f"{self.table}_{name}".lower() not in indexes]
        return problems

    def _schema_error(self, version: int | None) -> SchemaError:
        found = "missing" if version is None else f"at version {version}"
        return SchemaError(f"task table {self.table!r} is {found}, this GTA needs version "
                           f"{SCHEMA_VERSION}: run `gta migrate`")

    @contextlib.contextmanager
    def _table_required(self) -> Iterator[None]:
        """Turn the driver's "no such table" for the task table into `require_schema`'s error,
        at no cost to a statement that succeeds (the application's own calls go through here,
        also those on an async driver, whose errors peewee does not wrap)."""
        try:
            yield
        except Exception as exc:
            if is_missing_table(exc, self.table):
                raise self._schema_error(None) from exc
            raise

    def migrate(self) -> tuple[int | None, int]:
        """Create, repair or upgrade the table; returns (version before, version after). Idempotent.

        The real schema decides, not the version table: a missing task or version table is
        created, missing columns that existing rows can do without (nullable or with a default)
        are added and missing indexes created; a missing column that rows need raises a
        SchemaError naming it. Then the upgrades from the recorded version run.
        """
        def upgrade() -> tuple[int | None, int]:
            if self.dialect == "postgres":  # serialize concurrent migrations
                self._execute(self._d.fix(self._d.migration_lock), (self.table,))
            before = self.schema_version()
            if before is not None and before > SCHEMA_VERSION:
                raise SchemaError(f"task table {self.table!r} is at version {before}, newer than this "
                                  f"GTA ({SCHEMA_VERSION}): upgrade GTA")
            if not self.db.table_exists(f"{self.table}_schema"):
                self._execute(self.sql.create_schema_table)
            if not self.db.table_exists(self.table):
                for statement in self.sql.create[1:]:
                    self._execute(statement)
            else:
                self._repair()
                upgrades = self._d.upgrades(self.table)
                for version in range(before + 1 if before else SCHEMA_VERSION + 1, SCHEMA_VERSION + 1):
                    for statement in upgrades.get(version, []):
                        self._execute(statement)
                    self._execute(self.sql.set_schema_version, (version,))
            if self.schema_version() != SCHEMA_VERSION:
                self._execute(self.sql.set_schema_version, (SCHEMA_VERSION,))
            for _, name, create in self._side_tables():
                if not self.db.table_exists(name):
                    self._execute(create)
            if self.dialect == "sqlite":  # the id counter's row, raised on each insert (`sqlite_ids`)
                self._execute(self.sql.add_id_counter)
            return before, SCHEMA_VERSION

        if self.dialect == "mysql":  # DDL is not transactional there: use a named lock instead
            self._execute(self._d.fix(self._d.migration_lock), (f"gta_migrate_{self.table}",))
            try:
                return upgrade()
            finally:
                self._execute(self._d.fix(self._d.migration_unlock), (f"gta_migrate_{self.table}",))
        return in_transaction(self.db, upgrade)

    def _repair(self) -> None:
        """Add the task table's missing columns and indexes, or say which column cannot be added."""
        present = {column.name.lower() for column in self.db.get_columns(self.table)}
        missing = [name for name in self.sql.columns if name not in present]
        required = [name for name in missing if "NOT NULL" in self.sql.columns[name]
                    and "DEFAULT" not in self.sql.columns[name]]
        if required:
            raise SchemaError(f"task table {self.table!r} lacks column(s) {', '.join(required)}, which its rows "
                              f"cannot do without: restore the table, or rename it aside and run `gta migrate` "
                              f"for a new one")
        for name in missing:
            log.warning("task table %s: adding missing column %s", self.table, name)
            self._execute(self.sql.add_column(name))
        indexes = {index.name.lower() for index in self.db.get_indexes(self.table)}
        for name, create in self.sql.indexes.items():
            if f"{self.table}_{name}".lower() not in indexes:
                log.warning("task table %s: creating missing index %s_%s", self.table, self.table, name)
                self._execute(create)

    def drop(self) -> None:
        """Drop the task table and its side tables (tests and `gta purge --all` only)."""
        for statement in self.sql.drop:
            self._execute(statement)
        if self.dialect == "sqlite":
            sqlite_ids.forget(self.db.database, self.table)
