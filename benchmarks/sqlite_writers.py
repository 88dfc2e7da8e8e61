"""SQLite with several writer processes, as a web app on the embedded default runs: each
process does ``--count`` transactions that read an application table and then submit a task,
through peewee, SQLAlchemy or Django, begun IMMEDIATE as docs/integrations.md says
(``immediate``) or DEFERRED, each framework's default (``deferred``), while
``gta-supervisor --workers 2`` drains a backlog from the same file.

    python benchmarks/sqlite_writers.py --processes 1 2 4 8 --count 300 [--synchronous NORMAL]

Prints ``sqlite_writers_<framework>_<mode>_p<N> <rate> submits/s`` (committed submits over the
time from the first process's start to the last one's end) and ``…_failed <n> submits`` with
the distinct errors. ``tests/process/test_sqlite_writers.py`` runs the same processes (`run_writers`).
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

#: the application's table each transaction reads before it submits
APP_TABLE = "writers_app"
READ = f"SELECT COUNT(*) FROM {APP_TABLE}"
FRAMEWORKS = ("peewee", "sqlalchemy", "django")
MODES = ("immediate", "deferred")
#: each writer's busy timeout in seconds, as docs/integrations.md advises (GTA's own; drivers' default is 5)
BUSY_TIMEOUT = 30
#: how long a writer process may take to import its framework and say it is ready
READY_TIMEOUT = 60.0


@dataclasses.dataclass
class WriterRun:
    """What ``processes`` writer processes did: committed submits, the failed ones' errors
    (``Class: message`` → count) and the span from the first start to the last end."""

    ok: int
    failures: collections.Counter[str]
    seconds: float

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0


# -- one writer process ----------------------------------------------------------------------
def peewee_writer(path: str, mode: str, key: str, synchronous: str) -> Callable[[int], None]:
    """README's pattern: ``gta_core.transaction(db)`` (IMMEDIATE on SQLite), or peewee's
    default ``db.atomic()`` (deferred)."""
    import peewee

    import gta_core
    db = peewee.SqliteDatabase(path, pragmas={"journal_mode": "wal", "synchronous": synchronous},
                               timeout=BUSY_TIMEOUT)

    def write(n: int) -> None:
        with (gta_core.transaction(db) if mode == "immediate" else db.atomic()) as tx:
            db.execute_sql(READ).fetchone()
            gta_core.submit(tx, key, {"n": n})
    return write


def sqlalchemy_writer(path: str, mode: str, key: str, synchronous: str) -> Callable[[int], None]:
    """The Flask recipe's engine (docs/integrations.md): SQLAlchemy sends ``BEGIN IMMEDIATE``
    itself from its ``begin`` event (or a plain, deferred ``BEGIN``); a Session reads, then submits."""
    from sqlalchemy import create_engine, event, text
    from sqlalchemy.orm import Session

    import gta_core
    from examples.flask_sqlalchemy.app import begin_immediate
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": BUSY_TIMEOUT})
    event.listen(engine, "connect", lambda dbapi_connection, record: dbapi_connection.execute(
        f"PRAGMA synchronous = {synchronous}"))
    if mode == "immediate":
        begin_immediate(engine)
    else:
        event.listen(engine, "connect", lambda dbapi_connection, record: setattr(dbapi_connection,
                                                                                 "isolation_level", None))
        event.listen(engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN"))

    def write(n: int) -> None:
        with Session(engine) as session, session.begin():
            session.execute(text(READ)).scalar()
            gta_core.submit(session, key, {"n": n})
    return write


def django_writer(url: str, mode: str, key: str, synchronous: str) -> Callable[[int], None]:
    """The Django recipe's database settings (``transaction_mode`` IMMEDIATE on SQLite), or
    Django's default (deferred); a view's ``atomic()`` reads, then submits."""
    import django
    from django.conf import settings
    from django.db import connection, transaction

    import gta_core
    from examples.django.settings import database_settings
    database = database_settings(url)
    options = {**database.get("OPTIONS", {}), "timeout": BUSY_TIMEOUT,
               "init_command": f"PRAGMA synchronous = {synchronous}"}
    if mode == "deferred":
        options["transaction_mode"] = "DEFERRED"
    database = {**database, "OPTIONS": options}
    settings.configure(DATABASES={"default": database}, USE_TZ=True)
    django.setup()

    def write(n: int) -> None:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(READ)
                cursor.fetchone()
            gta_core.submit(connection, key, {"n": n})
    return write


def writer_process(framework: str, mode: str, count: int, key: str, synchronous: str) -> None:
    """The body of one writer process: open the framework (GTA configured by ``GTA_*``), say
    ``ready``, wait for a line on stdin, run ``count`` transactions and print what happened as
    one JSON line. A failed transaction is counted with its error and the next one goes on."""
    url = os.environ["GTA_DATABASE_URL"]
    path = url.split("://", 1)[1][1:]
    write = django_writer(url, mode, key, synchronous) if framework == "django" else \
        {"peewee": peewee_writer, "sqlalchemy": sqlalchemy_writer}[framework](path, mode, key, synchronous)
    print("ready", flush=True)
    sys.stdin.readline()
    ok, failures = 0, collections.Counter[str]()
    start = time.time()
    for n in range(count):
        try:
            write(n)
            ok += 1
        except Exception as exc:
            failures[f"{type(exc).__module__}.{type(exc).__name__}: {exc}"] += 1
    print(json.dumps({"ok": ok, "failures": failures, "start": start, "end": time.time()}), flush=True)


# -- the processes together ------------------------------------------------------------------
def create_app_table(path: str) -> None:
    """The application's table the writers read (a few rows), in GTA's SQLite file."""
    with sqlite3.connect(path) as connection:
        connection.execute(f"CREATE TABLE IF NOT EXISTS {APP_TABLE} (id INTEGER PRIMARY KEY, note TEXT)")
        connection.executemany(f"INSERT INTO {APP_TABLE} (note) VALUES (?)", [("order",)] * 10)
    connection.close()


def writers_pythonpath() -> str:
    """PYTHONPATH for the writer processes (``python -m benchmarks.sqlite_writers``): the folder
    holding ``benchmarks`` first, unless PYTHONPATH reaches a ``benchmarks`` already (the test
    suite run against the installed wheel gives one that holds no ``gta_core``: tests/support/paths.py)."""
    inherited = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    if any(os.path.isdir(os.path.join(entry, "benchmarks")) for entry in inherited):
        return os.pathsep.join(inherited)
    return os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__))), *inherited])


def run_writers(framework: str, mode: str, processes: int, count: int, key: str,
                synchronous: str = "FULL") -> WriterRun:
    """Start ``processes`` writer processes on the configured database (``GTA_*`` variables,
    the application table created: `create_app_table`), let them go at once when all are
    ready, and add up what they did. ``synchronous``: the writers' ``PRAGMA synchronous``
    (SQLite's default ``FULL`` syncs every commit to disk; ``NORMAL``, GTA's own, in WAL mode
    only at checkpoints)."""
    command = [sys.executable, "-m", "benchmarks.sqlite_writers", "--writer", framework, mode, str(count), key,
               synchronous]
    env = {**os.environ, "PYTHONPATH": writers_pythonpath()}
    children = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
                for _ in range(processes)]
    try:
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"a {framework} writer did not start (exit {child.wait(READY_TIMEOUT)})")
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        reports = [json.loads(child.communicate(timeout=600)[0]) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    failures = collections.Counter[str]()
    for report in reports:
        failures.update(report["failures"])
    seconds = max(report["end"] for report in reports) - min(report["start"] for report in reports)
    return WriterRun(sum(report["ok"] for report in reports), failures, seconds)


def main(argv: Sequence[str] | None = None) -> None:
    from common import emit, fresh_table, supervisor

    from gta_core import TaskRequest, submit_many
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--database", default="sqlite:///bench.db", help="a SQLite URL (default sqlite:///bench.db)")
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4, 8], help="writer processes per run")
    p.add_argument("--count", type=int, default=300, help="transactions per writer process")
    p.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--backlog", type=int, default=20_000, help="tasks the workers drain meanwhile, per run")
    p.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL",
                   help="the writers' PRAGMA synchronous (FULL, SQLite's default, syncs each commit to disk)")
    args = p.parse_args(argv)
    with fresh_table(args.database) as runtime:
        create_app_table(str(runtime.db.database))
        with supervisor("--workers", "2"):
            for framework in args.frameworks:
                for mode in args.modes:
                    for processes in args.processes:
                        submit_many(runtime.db, [TaskRequest("bench_noop")] * args.backlog)
                        run = run_writers(framework, mode, processes, args.count, "bench_numbered",
                                          args.synchronous)
                        name = f"sqlite_writers_{framework}_{mode}_p{processes}"
                        emit(name, run.rate, "submits/s")
                        emit(f"{name}_failed", run.failed, "submits")
                        for error, times in run.failures.most_common(3):
                            print(f"  {times} x {error[:300]}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--writer"]:
        writer_process(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6])
    else:
        main()
