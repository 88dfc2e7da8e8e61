"""Transaction handles: whatever an application keeps its transaction in, as GTA writes in it.

`resolve` picks one adapter module by the handle's type (the top-level package of a class
in its MRO), and imports it only then: no ORM is imported unless one of its handles is
passed. Anything no adapter claims goes to the peewee adapter, which also decides what
GTA's own connection is and refuses the rest with one clear error.
"""
from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..store import NewTask

#: top-level package of a handle's class → the adapter module that writes through it
ADAPTERS = {
    "peewee": "peewee",
    "playhouse": "peewee",
    "sqlalchemy": "sqlalchemy",
    "django": "django",
    "sqlite3": "dbapi",
    "psycopg2": "dbapi",
    "psycopg": "dbapi",
    "pymysql": "dbapi",
}
KINDS = ("a peewee Database or what db.atomic() returned, a SQLAlchemy Session or Connection, "
         "a Django connection (django.db.connection or connections[alias]), or a sqlite3, psycopg2, "
         "psycopg or pymysql connection")


class Handle(abc.ABC):
    """A caller's transaction, as the place GTA writes its rows in."""

    @abc.abstractmethod
    def insert(self, runtime: Runtime, rows: Sequence[NewTask]) -> list[int]:
        """Insert checked rows in the caller's transaction and arrange the wake-up for its commit."""

    @abc.abstractmethod
    def cancel(self, runtime: Runtime, ids: Sequence[int], force: bool) -> dict[int, str]:
        """`TaskStore.cancel` in the caller's transaction."""

    @abc.abstractmethod
    def after_commit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the caller's outermost transaction commits (eager mode)."""


def resolve(handle: Any, runtime: Runtime) -> Handle:
    """The adapter for ``handle``; `SubmitError` (before anything is written) for what none takes."""
    for klass in type(handle).__mro__:
        module = ADAPTERS.get(klass.__module__.partition(".")[0])
        if module is not None:
            adapter: Any = importlib.import_module(f"{__name__}.{module}")
            return adapter.adapt(handle, runtime)  # type: ignore[no-any-return]
    from . import peewee
    return peewee.adapt(handle, runtime)
