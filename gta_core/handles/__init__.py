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
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import SubmitError

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..store.inserts import NewTask
    from ..store.task_store import TaskStore

T = TypeVar("T")

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
#: what `resolve` refuses with a pointer to `gta_core.asubmit`: async drivers' connections, and
#: the async classes of psycopg and SQLAlchemy (by name: nothing is imported to tell)
ASYNC_PACKAGES = ("asyncpg", "aiomysql", "asyncmy", "aiosqlite")
ASYNC_CLASSES = ("AsyncConnection", "AsyncSession", "async_scoped_session")
KINDS = ("a peewee Database or what db.atomic() returned, a SQLAlchemy Session or Connection, "
         "a Django connection (django.db.connection or connections[alias]), or a sqlite3, psycopg2, "
         "psycopg or pymysql connection")


class Handle(abc.ABC):
    """A caller's transaction, as the place GTA writes its rows in."""

    @abc.abstractmethod
    def write(self, runtime: Runtime, queries: Callable[[TaskStore], T]) -> T:
        """Run ``queries`` with a store on the caller's connection, in its transaction (once
        the connection is known to be on GTA's database), and arrange the wake-up for its commit.
        GTA's statements there never read before they write: on SQLite a read would make the
        caller's transaction one that cannot wait for the write lock (`sqlite_locks`)."""

    def insert(self, runtime: Runtime, rows: Sequence[NewTask]) -> list[int]:
        """Insert checked rows in the caller's transaction and arrange the wake-up for its commit."""
        return self.write(runtime, lambda store: store.insert(rows))

    @abc.abstractmethod
    def cancel(self, runtime: Runtime, ids: Sequence[int], force: bool, by: str | None = None) -> dict[int, str]:
        """`TaskStore.cancel` in the caller's transaction (logged as done ``by`` whom)."""

    @abc.abstractmethod
    def after_commit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the caller's outermost transaction commits (eager mode)."""


class _OwnTransaction:
    """The type of `OWN_TRANSACTION`: one instance, named in reprs and docs."""

    def __repr__(self) -> str:
        return "gta_core.OWN_TRANSACTION"


#: The handle that leaves the caller's transaction on purpose: GTA's own connection to the
#: configured database, in a transaction of its own (or the one open on that connection, as
#: inside ``gta_core.transaction()``). The task is then committed whatever the caller's
#: transaction does; ``None`` is refused, so that a handle that happens to be None (an unset
#: variable, a context manager that yields nothing, ``with atomic() as a`` in Django) never
#: loses that promise silently.
OWN_TRANSACTION: Any = _OwnTransaction()


def refuse_none(handle: Any, name: str) -> None:
    """`SubmitError` for a handle that is None: it must never mean GTA's own transaction."""
    if handle is None:
        raise SubmitError(f"{name} is None: pass your transaction ({KINDS}) to write inside it, or "
                          "gta_core.OWN_TRANSACTION to commit on GTA's own connection regardless of yours")


def is_async(handle: Any) -> bool:
    """A handle of an async driver or class, which only `gta_core.asubmit` can write through."""
    return _adapter_name(type(handle)) == _ASYNC


def resolve(handle: Any, runtime: Runtime, name: str = "db_tx") -> Handle:
    """The adapter for ``handle``; `SubmitError` (before anything is written) for what none takes."""
    refuse_none(handle, name)
    module = _adapter_name(type(handle))
    if module == _ASYNC:
        raise SubmitError(f"{name} is an async handle ({type(handle).__name__}): "
                          "submit through it with `await gta_core.asubmit(...)`")
    if module is not None:
        adapter: Any = importlib.import_module(f"{__name__}.{module}")
        return adapter.adapt(handle, runtime)  # type: ignore[no-any-return]
    from . import peewee
    return peewee.adapt(handle, runtime, name)


#: what `_adapter_name` answers for an async handle
_ASYNC = "async"


#: `_adapter_name`'s answers by class
_ADAPTER_BY_CLASS: dict[type, str | None] = {}


def _adapter_name(klass: type) -> str | None:
    """The adapter module for handles of this class (`_ASYNC` for an async one; None: the
    peewee adapter decides), worked out once per class: a submit resolves its handle every call."""
    if klass in _ADAPTER_BY_CLASS:
        return _ADAPTER_BY_CLASS[klass]
    name: str | None = _ASYNC
    if not any(base.__module__.partition(".")[0] in ASYNC_PACKAGES or base.__name__ in ASYNC_CLASSES
               for base in klass.__mro__):
        name = next(filter(None, (ADAPTERS.get(base.__module__.partition(".")[0]) for base in klass.__mro__)), None)
    _ADAPTER_BY_CLASS[klass] = name
    return name
