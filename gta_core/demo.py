"""`gta demo`: the main job, end to end, on whatever database is configured (SQLite by default)."""
from __future__ import annotations

import logging
import time

from .database import check_connection, describe_url
from .runtime import Runtime
from .submit import submit
from .supervisor import run_supervisor

FINAL = {"succeeded", "failed", "cancelled"}


class _RolledBack(Exception):
    pass


def run_demo(runtime: Runtime, timeout: float) -> int:
    """Submit the demo tasks, run a supervisor until they settle, print what became of each."""
    settings = runtime.settings
    check_connection(runtime.db, settings.database_url)
    runtime.store.migrate()
    db = runtime.db
    print(f"GTA demo on {describe_url(settings.database_url)} (table {settings.table})")
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
    run_supervisor(runtime.__class__(quiet),
                   until=settled)
    print("\nwhat became of each task:")
    for task_id, label in submitted:
        task = runtime.store.get(task_id) or {}
        error = (task.get("last_error") or "").split("\n", 1)[0]
        suffix = f"  (last error: {error})" if error else ""
        print(f"  task {task_id:>5}  {task.get('status', '?'):<9} attempts {task.get('attempts')}  {label}{suffix}")
    # judged by content, not id: SQLite hands a rolled-back id out again
    exists = any(row[0] == '{"name":"nobody"}' for row in runtime.db.execute_sql(
        f"SELECT args FROM {settings.table} WHERE id >= ?".replace("?", runtime.store.sql.dialect.param),
        (min(ids),)).fetchall())
    print(f"  task {rolled_back_id:>5}  {'EXISTS (bug!)' if exists else 'never existed'}  (rolled back)")
    statuses = runtime.store.statuses(ids)
    expected = ["succeeded"] * 4 + ["failed"]
    return 0 if [statuses.get(i) for i in ids] == expected and not exists else 1
