"""What GTA's public functions raise when the database fails: a GTA error, never a driver's.

`gta_errors` wraps each public function that reaches the database (``status``, ``result``,
``wait``, ``queues``, ``pause_queue``, ``cancel``, ``submit`` …): a driver's error (peewee's,
psycopg's, PyMySQL's, sqlite3's, asyncpg's …, or SQLAlchemy's and Django's wrappers of them)
leaves it as one GTA error class per kind of failure (`db.driver_errors.as_gta_error`):
`DatabaseUnavailable` when the database cannot be reached or the connection was lost,
`SchemaError` when a table of GTA's is missing, `DatabaseError` for any other failure; the
driver's error is chained (``__cause__``). So ``except gta_core.GTAError`` catches every
failure of GTA's, and ``except gta_core.DatabaseUnavailable`` the ones worth retrying later.

In eager mode (`gta_core.testing`) nothing is translated: no row is written, and an error
that escapes is the handler's own, which the test should see as it was raised.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

from ..db.driver_errors import as_gta_error
from ..errors import GTAError
from ..runtime import get_runtime

F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Raise a driver's error escaping the block as the GTA error of its kind (see the module)."""
    try:
        yield
    except Exception as exc:
        error = as_gta_error(exc)
        if error is None or _eager():
            raise
        raise error from exc


def gta_errors(function: F) -> F:
    """A public function (or coroutine function) whose driver errors leave it as GTA errors."""
    if inspect.iscoroutinefunction(function):
        @functools.wraps(function)
        async def awaited(*args: Any, **kwargs: Any) -> Any:
            with translated():
                return await function(*args, **kwargs)
        return cast(F, awaited)

    @functools.wraps(function)
    def called(*args: Any, **kwargs: Any) -> Any:
        with translated():
            return function(*args, **kwargs)
    return cast(F, called)


def _eager() -> bool:
    try:
        return get_runtime().eager is not None
    except GTAError:  # settings that do not load: no eager mode either
        return False


__all__ = ["gta_errors", "translated"]
