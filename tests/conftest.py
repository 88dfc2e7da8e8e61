"""Shared fixtures: one behavioural suite, run against every configured database; and the
layer markers.

SQLite always runs. PostgreSQL and MariaDB/MySQL run when ``GTA_TEST_POSTGRES_URL`` /
``GTA_TEST_MYSQL_URL`` are set (``.ci/run`` sets both, and there an unreachable server
fails the run instead of skipping). Each test gets its own task table, dropped afterwards,
so tests never see each other's rows.

Each test is marked with its layer, from the folder it is in (`pytest_collection_modifyitems`):
``unit`` (tests/unit: no database, no process), ``db`` (tests/db: in process, on every configured
database), ``process`` (tests/process: real supervisors and other processes) and ``chaos``
(tests/chaos: fault injection, with real supervisors too, so also ``process``). The fast loop,
``scripts/test -m "not process"``, is unit and db.
"""
from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import gta_core
from gta_core import runtime as runtime_module
from gta_core.runtime import Runtime

from .support.backends import BACKENDS, ENABLED, NOT_RUN
from .support.helpers import Env
from .support.paths import INSTALLED, child_pythonpath, in_checkout, prepare_import_root

prepare_import_root()  # installed mode: children import tests.* from IMPORT_ROOT, gta_core from the wheel


@pytest.fixture(params=ENABLED)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def db_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'tasks.db'}"
    url = BACKENDS[backend]
    assert url
    return url


@pytest.fixture
def env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """A migrated task table of its own, this process configured for it, and a ledger file.

    ``env.runtime`` is this process's runtime; ``env.supervisor(...)`` starts a real
    ``gta-supervisor`` process against the same table.
    """
    table = f"gta_t_{secrets.token_hex(4)}"
    ledger = tmp_path / "ledger.jsonl"
    ledger.touch()
    variables = {
        "GTA_DATABASE_URL": db_url,
        "GTA_TABLE": table,
        "GTA_PLUGINS": "tests.handlers.tasks",
        "GTA_TEST_LEDGER": str(ledger),
        "GTA_RETRY_BASE": "0.2",
        "GTA_RETRY_CAP": "1",
        "GTA_SCAN_INTERVAL": "1",
        "GTA_LEASE_TIMEOUT": "10",
        "GTA_SHUTDOWN_TIMEOUT": "10",
        "GTA_METRICS": "off",  # tests of the sidecar turn it on, each on a port of its own
        # the periodic built-ins add rows of their own; their tests turn them back on
        "GTA_DISABLE_PLUGINS": "monitor,cleanup",
        "PYTHONPATH": child_pythonpath(),
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    runtime = runtime_module.configure()
    runtime.store.migrate()
    environment = Env(runtime=runtime, table=table, db_url=db_url, ledger=ledger, tmp_path=tmp_path)
    try:
        yield environment
    finally:
        environment.stop_all()
        runtime_module.reset()
        cleanup = Runtime(gta_core.load_settings({"database_url": db_url, "table": table}))
        cleanup.store.drop()
        cleanup.db.close()


#: the markers of a test in each folder of tests/ (registered in pytest.ini)
LAYERS = {"unit": ("unit",), "db": ("db",), "process": ("process",), "chaos": ("chaos", "process")}
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its layer's markers, from its folder; a test module of tests/ outside
    the layers' folders is refused (it would escape ``-m "not process"`` or ``-m process``)."""
    for item in items:
        path = Path(item.path).resolve()
        if not path.is_relative_to(TESTS):
            continue
        folder = path.relative_to(TESTS).parts[0]
        if folder not in LAYERS:
            raise pytest.UsageError(f"{item.nodeid}: a test module belongs in one of tests/{{{','.join(LAYERS)}}}/")
        for name in LAYERS[folder]:
            if item.get_closest_marker(name) is None:  # chaos tests carry their own (with harness options)
                item.add_marker(name)


def pytest_report_header() -> list[str]:
    origin = Path(gta_core.__file__).resolve()
    where = "the checkout" if in_checkout(origin) else "an installed package"
    return [f"gta backends: {', '.join(ENABLED)} (python {sys.version.split()[0]})",
            f"gta_core {gta_core.__version__} imported from {origin.parent} ({where}; "
            f"GTA_TEST_INSTALLED={'1' if INSTALLED else 'unset'})"]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Installed mode (scripts/test): the suite tests the wheel, or it does not run at all."""
    origin = Path(gta_core.__file__).resolve()
    if INSTALLED and in_checkout(origin):
        raise pytest.UsageError(f"GTA_TEST_INSTALLED=1 but gta_core was imported from the checkout ({origin}): "
                                f"run pytest with --import-mode=append and PYTHONSAFEPATH=1, as scripts/test does")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say why a server backend did not run: most tests are simply not parametrised for it, so no
    skip would say so; and quote the summaries of the Django 6 runs (`tests.process.test_django6`)."""
    suites = [value for report in terminalreporter.stats.get("passed", [])
              for name, value in report.user_properties if name == "django_suite"]
    if suites:
        terminalreporter.write_sep("=", "Django 6")
        for line in suites:
            terminalreporter.write_line(line)
    not_run = [reason for backend, reason in NOT_RUN.items() if backend not in ENABLED]
    if not_run:
        terminalreporter.write_sep("=", "databases not tested")
        for reason in not_run:
            terminalreporter.write_line(reason)
