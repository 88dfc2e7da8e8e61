"""Every public function raises GTA errors, never a driver's: one class per kind of failure
(the database cannot be reached: `DatabaseUnavailable`; a table of GTA's is missing:
`SchemaError`), with the driver's error chained. The walk covers every function of
``gta_core.__all__``: a new one must join `CALLS` or `NO_DATABASE`."""
from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import gta_core
from gta_core import OWN_TRANSACTION, TaskRequest
from gta_core import runtime as runtime_module
from gta_core.db.driver_errors import is_driver_error

from ..support.backends import BACKENDS, ENABLED

#: a public function that reaches the database, called with arguments it accepts
CALLS: dict[str, Callable[[], Any]] = {
    "submit": lambda: gta_core.submit(OWN_TRANSACTION, "record", {"n": 1}),
    "submit_many": lambda: gta_core.submit_many(OWN_TRANSACTION, [("record", {"n": 1})]),
    "asubmit": lambda: asyncio.run(gta_core.asubmit(OWN_TRANSACTION, "record", {"n": 1})),
    "asubmit_many": lambda: asyncio.run(gta_core.asubmit_many(OWN_TRANSACTION, [("record", {"n": 1})])),
    "transaction": lambda: gta_core.transaction().__enter__(),
    "cancel": lambda: gta_core.cancel([1, 2]),
    "status": lambda: gta_core.status(1),
    "result": lambda: gta_core.result(1),
    "attempts": lambda: gta_core.attempts(1),
    "wait": lambda: gta_core.wait(1, timeout=1),
    "queues": lambda: gta_core.queues(),
    "pause_queue": lambda: gta_core.pause_queue("mail"),
    "resume_queue": lambda: gta_core.resume_queue("mail"),
    "limits": lambda: gta_core.limits(),
    "limit_queue": lambda: gta_core.limit_queue("mail", concurrency=2),
    "unlimit_queue": lambda: gta_core.unlimit_queue("mail"),
    "group": lambda: gta_core.group(OWN_TRANSACTION, [("square", {"n": 1})], on_complete=TaskRequest("collect")),
    "chain": lambda: gta_core.chain(OWN_TRANSACTION, [("add", {}), ("add", {})]),
}
#: the public functions that never reach the database
NO_DATABASE = {"configure", "get_runtime", "load_settings", "hookimpl", "periodic", "task"}

#: a URL of each database whose server (or directory) is not there
UNREACHABLE = {
    "sqlite": "sqlite:///{tmp}/no-such-directory/tasks.db",
    "postgres": "postgresql://postgres@127.0.0.1:1/test",
    "mariadb": "mysql://root@127.0.0.1:1/test",
}


def test_the_walk_covers_every_public_function() -> None:
    functions = {name for name in gta_core.__all__
                 if callable(getattr(gta_core, name)) and not inspect.isclass(getattr(gta_core, name))}
    assert functions == set(CALLS) | NO_DATABASE


@pytest.fixture
def configured(tmp_path: Path) -> Iterator[Callable[..., None]]:
    """Configure this process's GTA (``configure(**settings)``); reset afterwards."""
    def configure(**settings: Any) -> None:
        runtime_module.configure(plugins=["tests.handlers.tasks", "tests.handlers.workflow_tasks"], metrics=False,
                                 disable_plugins=["monitor", "cleanup"], **settings)
    yield configure
    runtime_module.reset()


def raised(call: Callable[[], Any]) -> BaseException | None:
    try:
        call()
    except BaseException as exc:  # what escaped is the subject
        return exc
    return None


@pytest.mark.parametrize("backend", ENABLED)
def test_every_public_function_with_the_database_down(backend: str, tmp_path: Path,
                                                      configured: Callable[..., None]) -> None:
    configured(database_url=UNREACHABLE[backend].format(tmp=tmp_path), table="gta_nowhere")
    wrong = {}
    for name, call in CALLS.items():
        error = raised(call)
        if not isinstance(error, gta_core.DatabaseUnavailable) or not is_driver_error(error.__cause__):
            wrong[name] = f"{type(error).__module__}.{type(error).__name__}: {error} (cause {error.__cause__!r})"
    assert wrong == {}


def test_every_public_function_with_the_table_missing(backend: str, db_url: str,
                                                      configured: Callable[..., None]) -> None:
    configured(database_url=db_url if backend == "sqlite" else BACKENDS[backend], table="gta_never_migrated")
    wrong = {}
    for name, call in CALLS.items():
        if name == "transaction":  # a transaction on GTA's connection needs no table
            continue
        error = raised(call)
        if not isinstance(error, gta_core.SchemaError) or "gta migrate" not in str(error):
            wrong[name] = f"{type(error).__module__}.{type(error).__name__}: {error}"
    assert wrong == {}


def test_any_other_failure_is_a_database_error(env: Any) -> None:
    """A failure that is neither (here: a column dropped by hand) is `DatabaseError`, chained."""
    task_id = gta_core.submit(OWN_TRANSACTION, "record", {"n": 1})
    env.runtime.db.execute_sql(f"ALTER TABLE {env.table} DROP COLUMN result")
    error = raised(lambda: gta_core.result(task_id))
    assert type(error) is gta_core.DatabaseError and is_driver_error(error.__cause__), repr(error)
