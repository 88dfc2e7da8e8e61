"""peewee handles: a Database (its open transaction, or one of GTA's own) or its ``atomic()``."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import peewee

from ..database import in_transaction
from ..errors import SubmitError
from ..runtime import Runtime
from ..store import NewTask, TaskStore
from ..wake import notify_local
from . import KINDS, Handle


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

    def cancel(self, runtime: Runtime, ids: Sequence[int], force: bool) -> dict[int, str]:
        return runtime.store_for(self.db).cancel(ids, force)

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


def adapt(handle: Any, runtime: Runtime) -> PeeweeHandle:
    return PeeweeHandle(database_of(handle, runtime))


def database_of(db_tx: Any, runtime: Runtime) -> peewee.Database:
    """The peewee Database a handle writes through; None is GTA's own."""
    if db_tx is None:
        return runtime.db
    if isinstance(db_tx, peewee.Database):
        return db_tx
    db = getattr(db_tx, "db", None)
    if isinstance(db, peewee.Database):
        return db
    raise SubmitError(f"db_tx must be {KINDS}, or None for GTA's own connection; got {type(db_tx).__name__}")


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
