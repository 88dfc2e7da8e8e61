"""`TaskStore.migrate` upgrades a table created by an older GTA in place, once."""
from __future__ import annotations

import pytest

import gta_core
from gta_core.errors import SchemaError
from gta_core.store.sql.statements import SCHEMA_VERSION

from ..support.cli import fails, gta, ok
from ..support.helpers import Env

# Version 1's definitions of the indexes version 2 changed (MySQL/MariaDB: only the order index).
VERSION_1 = {
    "order": "CREATE INDEX {t}_order ON {t} (order_key, id)",
    "dedupe": "CREATE UNIQUE INDEX {t}_dedupe ON {t} (dedupe_key)",
    "finished": "CREATE INDEX {t}_finished ON {t} (finished_at)",
    "parent": "CREATE INDEX {t}_parent ON {t} (parent_id)",
}


def index_definition(env: Env, name: str) -> str:
    store, db = env.store, env.runtime.db
    if store.dialect == "postgres":
        return str(db.execute_sql("SELECT indexdef FROM pg_indexes WHERE indexname = %s", (name,)).fetchone()[0])
    if store.dialect == "sqlite":
        return str(db.execute_sql("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0])
    rows = db.execute_sql(f"SHOW INDEX FROM {env.table} WHERE Key_name = %s", (name,)).fetchall()
    return ", ".join(row[4] for row in sorted(rows, key=lambda row: row[3]))  # columns by position


def test_version_1_table_is_upgraded_in_place_and_keeps_its_rows(env: Env) -> None:
    store, db, t = env.store, env.runtime.db, env.table
    dialect = store.sql.dialect
    old = VERSION_1 if store.dialect != "mysql" else {"order": VERSION_1["order"]}
    for name, create in old.items():
        db.execute_sql(dialect.drop_index(t, name))
        db.execute_sql(create.format(t=t))
    db.execute_sql(f"DELETE FROM {t}_schema")
    db.execute_sql(dialect.fix(f"INSERT INTO {t}_schema (version) VALUES (?)"), (1,))
    kept = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1}, dedupe_key="once")
    assert store.schema_version() == 1

    assert store.migrate() == (1, SCHEMA_VERSION)
    assert store.migrate() == (SCHEMA_VERSION, SCHEMA_VERSION)  # once only
    assert store.schema_version() == SCHEMA_VERSION
    if store.dialect == "mysql":
        assert index_definition(env, f"{t}_order") == "order_key, status, id"
    else:
        for name in old:
            assert "IS NOT NULL" in index_definition(env, f"{t}_{name}"), name
        # version 1's inserts (ON CONFLICT (dedupe_key), no WHERE) need a full unique index
        kept_for_version_1 = index_definition(env, f"{t}_dedupe_v1")
        assert "UNIQUE" in kept_for_version_1 and "WHERE" not in kept_for_version_1, kept_for_version_1
    # the upgraded dedupe index still decides: the kept row's id comes back, nothing is added
    assert gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 2}, dedupe_key="once") == kept
    assert store.get(kept)["args"] == '{"n":1}'  # type: ignore[index]


# -- a schema changed behind GTA's back: the real tables decide, not the version table ----------
def test_migrate_recreates_a_task_table_dropped_by_hand(env: Env) -> None:
    env.runtime.db.execute_sql(f"DROP TABLE {env.table}")

    out = ok("migrate")
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1})  # was: relation ... does not exist
    assert env.store.get(task_id)["status"] == "pending"  # type: ignore[index]
    assert f"repaired {env.table} on " in out and f"table {env.table} is missing" in out, out
    assert env.store.schema_problems() == []
    assert ok("migrate").strip().endswith(f"is at schema version {SCHEMA_VERSION}")  # nothing more to do


def test_migrate_adds_missing_columns_and_indexes_and_keeps_the_rows(env: Env) -> None:
    kept = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1}, dedupe_key="once")
    db, t, dialect = env.runtime.db, env.table, env.store.sql.dialect
    for name in ("lease", "dedupe"):
        db.execute_sql(dialect.drop_index(t, name))
    db.execute_sql(f"ALTER TABLE {t} DROP COLUMN context")
    assert env.store.schema_problems() == ["column context is missing", f"index {t}_lease is missing",
                                           f"index {t}_dedupe is missing"]
    with pytest.raises(SchemaError, match="column context is missing"):
        env.store.require_schema()  # a supervisor would not start on it

    out = ok("migrate")
    assert out.count("repaired") == 3, out
    assert env.store.schema_problems() == []
    env.store.require_schema()
    # the recreated unique index decides again, and the old row is intact
    assert gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 2}, dedupe_key="once") == kept
    assert env.store.get(kept)["args"] == '{"n":1}'  # type: ignore[index]


def test_migrate_names_a_column_it_cannot_add_and_changes_nothing(env: Env) -> None:
    kept = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1})
    env.runtime.db.execute_sql(f"ALTER TABLE {env.table} DROP COLUMN max_attempts")
    fails(gta("migrate"), f"task table {env.table!r} lacks column(s) max_attempts", "restore the table")
    assert env.store.schema_problems() == ["column max_attempts is missing"]
    assert list(env.runtime.db.execute_sql(f"SELECT id FROM {env.table}").fetchall()) == [(kept,)]


def test_migrate_recreates_a_dropped_version_table(env: Env) -> None:
    kept = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1})
    env.runtime.db.execute_sql(f"DROP TABLE {env.table}_schema")
    out = ok("migrate")
    assert f"table {env.table}_schema is missing" in out, out
    assert env.store.schema_version() == SCHEMA_VERSION and env.store.schema_problems() == []
    assert env.store.get(kept)["status"] == "pending"  # type: ignore[index]
