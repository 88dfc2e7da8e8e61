"""`gta demo`: the main job, end to end, on whatever database is configured (SQLite by default).

The demo tasks (`gta_plugins.demo`) are registered only here, not in every process through the
``gta_handlers`` entry point group, and they run in a queue of their own (`DEMO_QUEUE`), which
the demo's supervisor alone serves. On a database other applications use, the demo therefore
never takes their tasks: not those it has no handler for (no worker leases a key it lacks), not
those of handlers this environment happens to load, and no slot of a periodic task either.
"""
from __future__ import annotations

import logging
import time

from ..db.connect import check_connection, describe_url
from ..runtime import Runtime, configure
from ..submit import submit
from ..supervisor.manager import run_supervisor

FINAL = {"succeeded", "failed", "cancelled"}
#: the module of the demo tasks, loaded as a plugin by `gta demo` only
DEMO_PLUGIN = "gta_plugins.demo"
#: the queue of the demo tasks (`gta_plugins.demo` declares it)
DEMO_QUEUE = "gta_demo"


class _RolledBack(Exception):
    pass


def demo_runtime(runtime: Runtime) -> Runtime:
    """This process's runtime for the demo: the demo tasks loaded, only their queue served."""
    settings = runtime.settings
    plugins = settings.plugins if DEMO_PLUGIN in settings.plugins else (*settings.plugins, DEMO_PLUGIN)
    return configure(settings.replace(plugins=plugins, queues=(DEMO_QUEUE,)))


def run_demo(runtime: Runtime, timeout: float) -> int:
    """Submit the demo tasks, run a supervisor until they settle, print what became of each."""
    runtime = demo_runtime(runtime)
    settings = runtime.settings
    check_connection(runtime.db, settings.database_url)
    runtime.store.migrate()
    db = runtime.db
    print(f"GTA demo on {describe_url(settings.database_url)} (table {settings.table}, queue {DEMO_QUEUE})")
    submitted: list[tuple[int, str]] = []
    with db.atomic() as tx:
        for name in ("Ada", "Grace", "Linus"):
            submitted.append((submit(tx, "demo_hello", {"name": name}), f"demo_hello(name={name!r})"))
        submitted.append((submit(tx, "demo_flaky", {"failures": 2}), "demo_flaky: fails twice, then succeeds"))
        submitted.append((submit(tx, "demo_broken"), "demo_broken: always fails"))
    rolled_back_id = None
    try:
        with db.atomic() as tx:
            rolled_back_id = submit(tx, "demo_hello", {"name": "nobody"})
            raise _RolledBack
    except _RolledBack:
        pass
    print(f"submitted {len(submitted)} tasks; task {rolled_back_id} was submitted in a transaction "
          "that rolled back")
    ids = [task_id for task_id, _ in submitted]
    deadline = time.monotonic() + timeout

    def settled() -> bool:
        statuses = runtime.store.statuses(ids)
        return all(status in FINAL for status in statuses.values()) or time.monotonic() > deadline

    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("gta.supervisor").setLevel(logging.WARNING)
    quiet = settings.replace(workers=min(settings.workers, 2), shutdown_timeout=5, metrics=False)
    run_supervisor(runtime.__class__(quiet), until=settled, periodic=False)
    print("\nwhat became of each task:")
    for task_id, label in submitted:
        task = runtime.store.get(task_id) or {}
        error = (task.get("last_error") or "").split("\n", 1)[0]
        suffix = f"  (last error: {error})" if error else ""
        print(f"  task {task_id:>5}  {task.get('status', '?'):<9} attempts {task.get('attempts')}  {label}{suffix}")
    # ids are never handed out twice (SQLite's too, `store/inserts.py`): a row with it would be this one
    assert rolled_back_id is not None
    exists = runtime.store.get(rolled_back_id) is not None
    print(f"  task {rolled_back_id:>5}  {'EXISTS (bug!)' if exists else 'never existed'}  (rolled back)")
    statuses = runtime.store.statuses(ids)
    expected = ["succeeded"] * 4 + ["failed"]
    return 0 if [statuses.get(i) for i in ids] == expected and not exists else 1
