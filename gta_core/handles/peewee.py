"""peewee handles: a Database (its open transaction, or one of GTA's own) or its ``atomic()``."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import peewee

from ..errors import SubmitError
from ..runtime import Runtime
from ..store import TaskStore
from ..store_insert import NewTask
from ..transactions import in_transaction
from ..wake import notify_local
from . import KINDS, OWN_TRANSACTION, Handle, refuse_none


class PeeweeHandle(Handle):
    def __init__(self, db: peewee.Database) -> None:
        self.db = db

    def insert(self, runtime: Runtime, rows: Sequence[NewTask]) -> list[int]:
        store = runtime.store_for(self.db)
        if self.db.in_transaction():
            ids = store.insert(rows)
            wake_after_commit(runtime, self.db, store)
            return ids
        ids = in_transaction(self.db, lambda: store.insert(rows))
        wake(runtime, self.db, store)
        return ids

    def cancel(self, runtime: Runtime, ids: Sequence[int], force: bool, by: str | None = None) -> dict[int, str]:
        return runtime.store_for(self.db).cancel(ids, force, by)

    def after_commit(self, fn: Callable[[], None]) -> None:
        db = self.db

        def after_commit() -> None:
            """Run after COMMIT; if ``fn`` raises, peewee answers by rolling back a transaction
            that is already over, which SQLite refuses with an error that hides ``fn``'s.
            An empty transaction opened first gives that rollback something to end."""
            try:
                fn()
            except BaseException:
                try:
                    db.execute_sql("BEGIN")
                except Exception:  # then the rollback's own error wins, fn's stays its context
                    pass
                raise
        if db.in_transaction():
            db.after_commit(after_commit)
        else:
            fn()


def adapt(handle: Any, runtime: Runtime, name: str = "db_tx") -> PeeweeHandle:
    return PeeweeHandle(database_of(handle, runtime, name))


def database_of(handle: Any, runtime: Runtime, name: str = "db_tx") -> peewee.Database:
    """The peewee Database a handle writes through: `OWN_TRANSACTION` is GTA's own; None and
    anything else no adapter takes are refused (`SubmitError`, before anything is written)."""
    refuse_none(handle, name)
    if handle is OWN_TRANSACTION:
        return runtime.db
    if isinstance(handle, peewee.Database):
        return handle
    db = getattr(handle, "db", None)
    if isinstance(db, peewee.Database):
        return db
    raise SubmitError(f"{name} must be {KINDS}, or gta_core.OWN_TRANSACTION for GTA's own connection; "
                      f"got {type(handle).__name__}")


def wake(runtime: Runtime, db: peewee.Database, store: TaskStore) -> None:
    if store.dialect != "postgres":
        notify_local(runtime.wake_key(db))


def wake_after_commit(runtime: Runtime, db: peewee.Database, store: TaskStore) -> None:
    """Register one local wake-up for when the caller's outermost transaction commits."""
    if store.dialect == "postgres":
        return
    transactions = db._state.transactions  # type: ignore[attr-defined]  # peewee's transaction stack
    top = transactions[0] if transactions else None
    if top is None or getattr(top, "_gta_wake", False):
        return
    try:
        db.after_commit(lambda: wake(runtime, db, store))
    except ValueError:  # manual commit mode has no commit hook; polling will find the task
        return
    top._gta_wake = True
