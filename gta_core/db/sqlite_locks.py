"""SQLite's "database is locked" in a caller's transaction, as `DatabaseLocked`: a GTA error
that names the cause and the fix for the handle in hand, the driver's error chained.

SQLite has one writer at a time. A transaction begun DEFERRED (plain ``BEGIN``: the default
of peewee's ``atomic()``, Django's ``atomic()``, an explicit ``BEGIN``) that has read holds a
snapshot, and its first write must make it the writer. SQLite refuses that at once, without
consulting the busy timeout, when another connection holds the write lock (SQLITE_BUSY: waiting
could deadlock two such transactions) or has committed since the snapshot (SQLITE_BUSY_SNAPSHOT:
what it read is no longer current). Under busy workers that is most submits of a web app that
reads before it submits. A transaction begun IMMEDIATE takes the write lock at ``BEGIN`` and
waits its turn there, up to its busy timeout. GTA's own statements never read before their
write on a caller's connection, so a refusal at once means the caller's transaction had read.
"""
from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite3

from ..errors import DatabaseLocked

SQLITE_BUSY = 5
SQLITE_BUSY_SNAPSHOT = 517
#: asks a connection its busy timeout (ms) after a refused write; reads nothing
BUSY_TIMEOUT = "PRAGMA busy_timeout"
GUIDE = 'docs/integrations.md, "SQLite: begin write transactions IMMEDIATE"'


def busy_error(exc: BaseException) -> sqlite3.OperationalError | None:
    """The SQLITE_BUSY error behind ``exc`` (as sqlite3 and aiosqlite raise it, or wrapped: by
    peewee in ``args[0]``, by SQLAlchemy in ``orig``, by Django as the ``__cause__``), or None.

    Imports no sqlite3: without it loaded there is no SQLite error to find, and a worker on
    another database must not map SQLite's library (every module reaches this one)."""
    driver = sys.modules.get("sqlite3")
    if driver is None:
        return None
    operational: type[sqlite3.OperationalError] = driver.OperationalError
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        error = todo.pop()
        if not isinstance(error, BaseException) or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, operational) and _busy(error):
            return error
        todo += [getattr(error, "orig", None), error.__cause__, error.args[0] if error.args else None]
    return None


def _busy(error: sqlite3.OperationalError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11 and later
    return code & 0xFF == SQLITE_BUSY if isinstance(code, int) else str(error) == "database is locked"


def locked(kind: str, immediate: str, error: sqlite3.OperationalError, waited: float,
           busy_timeout: float | None) -> DatabaseLocked:
    """The `DatabaseLocked` for ``error``, which a write of GTA's in the transaction of ``kind``
    (a handle's name) got after ``waited`` seconds on a connection whose busy timeout is
    ``busy_timeout`` seconds (None: unknown); ``immediate``: how that handle begins IMMEDIATE.

    A refusal well within the busy timeout, or SQLITE_BUSY_SNAPSHOT, is SQLite refusing to let
    a transaction that has read wait; after the busy timeout, the lock was simply taken too long."""
    snapshot = getattr(error, "sqlite_errorcode", None) == SQLITE_BUSY_SNAPSHOT
    if snapshot or busy_timeout is None or waited < busy_timeout / 2:
        cause = ("another connection has written since it read (SQLITE_BUSY_SNAPSHOT)" if snapshot
                 else "another connection holds the write lock (SQLITE_BUSY)")
        return DatabaseLocked(
            f"SQLite refused at once to let the {kind}'s transaction write: it began DEFERRED and read first, "
            f"and {cause}, so it cannot wait for its turn (its busy timeout does not apply). Nothing was "
            f"written; roll your transaction back and run it again. Begin write transactions IMMEDIATE, which "
            f"wait for the lock at BEGIN: {immediate} ({GUIDE})")
    return DatabaseLocked(
        f"SQLite's write lock stayed taken longer than the {kind} waits for it (its busy timeout, "
        f"{busy_timeout:g} s; {waited:.1f} s waited): nothing was written. Keep write transactions short, give the "
        "connection a longer busy timeout, or move to PostgreSQL when more processes write than one SQLite file "
        'serves (docs/guarantees.md, "SQLite")')


def busy_timeout(ask: Callable[[str], Sequence[Sequence[Any]]]) -> float | None:
    """A connection's busy timeout in seconds, ``ask`` running `BUSY_TIMEOUT` on it (None when
    that fails: the refused write's error is the one to report)."""
    try:
        rows = ask(BUSY_TIMEOUT)
        return float(rows[0][0]) / 1000
    except Exception:
        return None


@contextlib.contextmanager
def lock_errors(kind: str, immediate: str, ask: Callable[[str], Sequence[Sequence[Any]]]) -> Iterator[None]:
    """Turn an SQLITE_BUSY from the block (GTA's write in the transaction of ``kind``) into `locked`'s
    error; ``ask`` runs a statement on that connection (`BUSY_TIMEOUT`, once a write was refused).
    The caller's transaction is left as it is: what to do with it is the caller's call."""
    started = time.monotonic()
    try:
        yield
    except Exception as exc:
        error = busy_error(exc)
        if error is None:
            raise
        waited = time.monotonic() - started
        raise locked(kind, immediate, error, waited, busy_timeout(ask)) from exc
