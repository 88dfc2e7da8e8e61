"""`TaskStore.migrate` upgrades a table created by an older GTA in place, once."""
from __future__ import annotations

import gta_core
from gta_core.sql import SCHEMA_VERSION

from .helpers import Env

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
    # the upgraded dedupe index still decides: the kept row's id comes back, nothing is added
    assert gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 2}, dedupe_key="once") == kept
    assert store.get(kept)["args"] == '{"n":1}'  # type: ignore[index]
