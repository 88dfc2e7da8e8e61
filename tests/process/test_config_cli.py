"""Settings validation, and both command lines run as real subprocesses: every error is one
line on stderr with exit code 2 (1 when the database fails), never a traceback, and nothing is
written."""
from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import gta_core
from gta_core.config import parse_duration
from gta_core.runtime import Runtime
from gta_core.store.sql.statements import SCHEMA_VERSION

from ..support.cli import assert_one_line_error
from ..support.helpers import Env
from ..support.paths import child_pythonpath

GTA = [sys.executable, "-c", "import sys; from gta_core.cli.main import main; sys.exit(main())"]
SUPERVISOR = [sys.executable, "-m", "gta_core.cli_supervisor"]
UNREACHABLE = ["postgresql://postgres@127.0.0.1:1/test", "mysql://root@127.0.0.1:1/test"]


def clean_environ(**variables: str) -> dict[str, str]:
    """This process's environment without any GTA_* setting, plus ``variables``."""
    environ = {name: value for name, value in os.environ.items() if not name.startswith("GTA_")}
    environ["PYTHONPATH"] = child_pythonpath()
    return {**environ, **variables}


def run(command: list[str], *args: str, environ: Mapping[str, str] | None = None,
        cwd: Path | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a CLI to completion (``environ`` defaults to this process's, which `env` configured).

    Every supervisor run here must fail at start, so a timeout means it wrongly started.
    """
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ if environ is None else environ), cwd=cwd)


def row_count(env: Env) -> int:
    return env.runtime.db.execute_sql(f"SELECT COUNT(*) FROM {env.table}").fetchone()[0]


def schema_version(db_url: str, table: str) -> int | None:
    runtime = Runtime(gta_core.load_settings({"database_url": db_url, "table": table}, environ={}))
    try:
        return runtime.store.schema_version()
    finally:
        runtime.db.close()


# -- settings -----------------------------------------------------------------------------------
BAD_SETTINGS: list[tuple[str, dict[str, Any], dict[str, str], str]] = [
    ("workers-zero", {"workers": 0}, {}, "workers"),
    ("workers-word", {"workers": "x"}, {}, "workers"),
    ("workers-fraction", {"workers": 1.5}, {}, "workers"),
    ("workers-from-env", {}, {"GTA_WORKERS": "abc"}, "workers"),
    ("threads-negative", {"threads": "-2"}, {}, "threads"),
    ("lease-timeout-negative", {"lease_timeout": "-1"}, {}, "lease_timeout"),
    ("lease-timeout-zero", {"lease_timeout": "0s"}, {}, "lease_timeout"),
    ("lease-timeout-nan", {"lease_timeout": float("nan")}, {}, "lease_timeout"),
    ("lease-timeout-inf", {"lease_timeout": float("inf")}, {}, "lease_timeout"),
    ("scan-interval-unit", {"scan_interval": "5 parsecs"}, {}, "scan_interval"),
    ("database-url-scheme", {"database_url": "ftp://x"}, {}, "database_url"),
    ("database-url-from-env", {}, {"GTA_DATABASE_URL": "gta.db"}, "database_url"),
    ("table-bad-name", {"table": "bad-name;"}, {}, "table"),
    ("queues-empty", {"queues": ""}, {}, "queues"),
    ("queues-only-commas", {}, {"GTA_QUEUES": " , ,"}, "queues"),
    ("metrics-bind", {"metrics_bind": "nope"}, {}, "metrics_bind"),
    ("metrics-bind-port", {"metrics_bind": "127.0.0.1:99999"}, {}, "metrics_bind"),
    ("listen-url-mysql", {"listen_url": "mysql://root@db/app"}, {}, "listen_url"),
    ("listen-url-word", {}, {"GTA_LISTEN_URL": "yes"}, "listen_url"),
    ("log-level", {"log_level": "loud"}, {}, "log_level"),
    ("instant-over-scan", {"instant_scan_interval": "10s", "scan_interval": "5s"}, {}, "instant_scan_interval"),
    ("instant-over-scan-env", {}, {"GTA_INSTANT_SCAN_INTERVAL": "2s", "GTA_SCAN_INTERVAL": "1s"},
     "instant_scan_interval"),
    ("unknown-setting", {"wrokers": 3}, {}, "wrokers"),
]


@pytest.mark.parametrize("case", BAD_SETTINGS, ids=[case[0] for case in BAD_SETTINGS])
def test_bad_setting_raises_config_error_naming_it(case: tuple[str, dict[str, Any], dict[str, str], str]) -> None:
    _, overrides, environ, name = case
    with pytest.raises(gta_core.ConfigError) as info:
        gta_core.load_settings(overrides, environ=environ)
    assert info.value.setting.split()[0] == name
    message = str(info.value)
    assert name in message and info.value.rule in message
    assert "\n" not in message


@pytest.mark.parametrize("variable, value", [("GTA_WORKERS", "abc"), ("GTA_DATABASE_URL", "gta.db"),
                                             ("GTA_LEASE_TIMEOUT", "-1")])
def test_bad_environment_variable_is_named_with_its_value(variable: str, value: str) -> None:
    with pytest.raises(gta_core.ConfigError) as info:
        gta_core.load_settings(environ={variable: value})
    assert variable in str(info.value) and repr(value) in str(info.value)


@pytest.mark.parametrize("command", [SUPERVISOR, [*GTA, "list"]], ids=["gta-supervisor", "gta"])
@pytest.mark.parametrize("variable, value, secret", [
    ("GTA_DASHBOARD_TOKEN", "short-secret", "short-secret"),
    ("GTA_DATABASE_URL", "postgresq://gta:s3cret-pw@db.example/tasks", "s3cret-pw"),
    ("GTA_DATABASE_URL", "postgresql:/gta:s3cret-pw@db.example/tasks", "s3cret-pw"),
    ("GTA_DATABASE_URL", "mysql2://gta@db.example/tasks?password=s3cret-pw", "s3cret-pw"),
    ("GTA_LISTEN_URL", "mysql://gta:s3cret-pw@db.example/tasks", "s3cret-pw"),
], ids=["token", "url", "malformed-url", "query-password", "listen-url"])
def test_a_refused_secret_is_named_but_never_echoed(command: list[str], variable: str, value: str,
                                                   secret: str) -> None:
    line = assert_one_line_error(run(command, environ=clean_environ(**{variable: value})), variable)
    assert secret not in line and ("***" in line or "<hidden>" in line), line


def test_settings_repr_hides_the_token_and_passwords() -> None:
    settings = gta_core.load_settings({"database_url": "postgresql://gta:s3cret-pw@db/tasks?password=s3cret-pw",
                                       "dashboard_token": "0123456789abcdef-token"}, environ={})
    assert "s3cret-pw" not in repr(settings) and "0123456789abcdef-token" not in repr(settings)
    assert "postgresql://gta:***@db/tasks?password=***" in repr(settings)


@pytest.mark.parametrize("text, seconds", [
    ("30s", 30.0), ("5m", 300.0), ("7d", 604800.0), ("250ms", 0.25), ("2h", 7200.0), ("1.5", 1.5),
    ("45", 45.0), (" 10s ", 10.0), (12, 12.0), (0.5, 0.5),
])
def test_durations_parse(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "5 parsecs", "-1s", "1e3", "five", "5mm", "nan", "inf"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_durations_through_settings() -> None:
    settings = gta_core.load_settings({"storage_timeout": "7d", "lease_timeout": "30s", "running_timeout": "5m",
                                       "instant_scan_interval": "250ms"}, environ={})
    assert (settings.storage_timeout, settings.lease_timeout, settings.running_timeout,
            settings.instant_scan_interval) == (604800.0, 30.0, 300.0, 0.25)


def test_defaults() -> None:
    settings = gta_core.load_settings(environ={})
    assert settings == gta_core.Settings()
    assert settings.database_url == "sqlite:///gta.db" and settings.table == "gta_tasks"
    assert (settings.storage_timeout, settings.initialized_timeout, settings.running_timeout) == (
        7 * 86400.0, 300.0, 1800.0)
    assert (settings.scan_interval, settings.instant_scan_interval) == (5.0, 0.1)
    assert settings.queues == ("default",)


def test_supervisor_help_shows_defaults_as_written() -> None:
    text = " ".join(run(SUPERVISOR, "--help", environ=clean_environ()).stdout.split())
    for written in ("GTA_STORAGE_TIMEOUT; default 7d)", "GTA_LEASE_TIMEOUT; default 30s)",
                    "GTA_INSTANT_SCAN_INTERVAL; default 100ms)", "GTA_RUNNING_TIMEOUT; default 30m)",
                    "GTA_RETRY_CAP; default 1h)", "GTA_METRICS; default on)"):
        assert written in text, written
    assert "604800" not in text and "1800.0" not in text


def test_flag_beats_environment_beats_default() -> None:
    environ = {"GTA_WORKERS": "5", "GTA_QUEUES": "mail, default", "GTA_TABLE": "from_env"}
    settings = gta_core.load_settings({"workers": "3", "table": None}, environ=environ)
    assert settings.workers == 3  # flag
    assert settings.table == "from_env"  # an unset flag (None) falls through to the environment
    assert settings.queues == ("mail", "default")
    assert settings.threads == 1  # default
    # a bad environment value is not an error when a flag overrides it
    assert gta_core.load_settings({"workers": "2"}, environ={"GTA_WORKERS": "abc"}).workers == 2


# -- gta-supervisor: bad configuration fails at start -------------------------------------------
@pytest.mark.parametrize("args, environ, fragments", [
    (["--workers", "0"], {}, ["workers"]),
    (["--workers", "two"], {}, ["workers"]),
    ([], {"GTA_WORKERS": "abc"}, ["workers", "GTA_WORKERS"]),
    (["--lease-timeout=-1"], {}, ["lease_timeout"]),
    (["--metrics-bind", "nope"], {}, ["metrics_bind"]),
    (["--queues", ""], {}, ["queues"]),
    (["--table", "bad-name;"], {}, ["table"]),
    (["--database-url", "ftp://x"], {}, ["database_url"]),
    (["--instant-scan-interval", "10s", "--scan-interval", "5s"], {}, ["instant_scan_interval"]),
], ids=["workers-0", "workers-word", "workers-env", "lease-timeout", "metrics-bind", "queues", "table",
        "database-url", "instant-over-scan"])
def test_supervisor_rejects_bad_settings(tmp_path: Path, args: list[str], environ: dict[str, str],
                                         fragments: list[str]) -> None:
    db_file = tmp_path / "never.db"
    result = run(SUPERVISOR, *args, environ=clean_environ(GTA_DATABASE_URL=f"sqlite:///{db_file}", **environ),
                 cwd=tmp_path)
    assert_one_line_error(result, "gta-supervisor", *fragments)
    assert result.stdout == ""
    assert not db_file.exists()  # failed before touching any database


@pytest.mark.parametrize("url", UNREACHABLE, ids=["postgres", "mysql"])
def test_supervisor_unreachable_database(tmp_path: Path, url: str) -> None:
    result = run(SUPERVISOR, "--workers", "1", "--database-url", url, environ=clean_environ(), cwd=tmp_path)
    assert_one_line_error(result, "cannot reach database", url, code=1)
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a stray SQLite file


def test_supervisor_unopenable_sqlite_file(tmp_path: Path) -> None:
    missing_dir = tmp_path / "no" / "such" / "dir"
    url = f"sqlite:///{missing_dir / 'gta.db'}"
    result = run(SUPERVISOR, "--workers", "1", environ=clean_environ(GTA_DATABASE_URL=url), cwd=tmp_path)
    assert_one_line_error(result, "cannot reach database", url, code=1)
    assert not (tmp_path / "no").exists()


def test_supervisor_bad_plugins_fail_at_start(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gta.db'}"
    migrated = Runtime(gta_core.load_settings({"database_url": url}, environ={}))
    migrated.store.migrate()  # so that the plugins are the only thing wrong
    migrated.db.close()
    environ = clean_environ(GTA_DATABASE_URL=url)
    clash = run(SUPERVISOR, "--workers", "1", "--plugin", "tests.handlers.plugins_bad.clash_a",
                "--plugin", "tests.handlers.plugins_bad.clash_b", environ=environ, cwd=tmp_path)
    assert_one_line_error(clash, "'clash_key'")
    unknown = run(SUPERVISOR, "--workers", "1",
                  environ={**environ, "GTA_PLUGINS": "tests.handlers.plugins_bad.unknown_hook"}, cwd=tmp_path)
    assert_one_line_error(unknown, "gta_nonexistent_hook")
    bad_args = run(SUPERVISOR, "--workers", "1", "--plugin", "tests.handlers.plugins_bad.bad_hook_args",
                   environ=environ, cwd=tmp_path)
    assert_one_line_error(bad_args, "gta_retry_delay", "bogus")


def test_supervisor_missing_table_says_to_migrate(db_url: str) -> None:
    table = f"gta_never_{secrets.token_hex(4)}"
    environ = clean_environ(GTA_DATABASE_URL=db_url, GTA_TABLE=table, GTA_PLUGINS="tests.handlers.tasks")
    result = run(SUPERVISOR, "--workers", "1", environ=environ)
    assert_one_line_error(result, "gta migrate", table)
    assert schema_version(db_url, table) is None  # the supervisor did not create it


#: on PYTHONPATH, makes the database drivers unimportable, as in a venv without the extras
DRIVER_BLOCKER = """
import sys

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("psycopg2", "psycopg", "pymysql", "MySQLdb"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
"""
LIBRARY_SUBMIT = """
import gta_core
gta_core.configure(database_url=%r)
try:
    gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1})
except gta_core.DriverMissing as exc:
    print(exc)
"""


@pytest.mark.parametrize("url, extra", [(UNREACHABLE[0], "postgres"), (UNREACHABLE[1], "mysql")],
                         ids=["postgres", "mysql"])
def test_missing_driver_names_the_extra_to_install(tmp_path: Path, url: str, extra: str) -> None:
    (tmp_path / "sitecustomize.py").write_text(DRIVER_BLOCKER)
    environ = clean_environ(GTA_PLUGINS="tests.handlers.tasks")
    environ["PYTHONPATH"] = os.pathsep.join([str(tmp_path), environ["PYTHONPATH"]])
    blocked = run([sys.executable, "-c", "import psycopg2"], environ=environ)
    assert "No module named 'psycopg2'" in blocked.stderr  # the shim works: no driver here
    install = f"pip install 'gta[{extra}]'"
    for command, args in ((GTA, ["--database-url", url, "migrate"]), (GTA, ["migrate", "--database-url", url]),
                          (SUPERVISOR, ["--workers", "1", "--database-url", url])):
        result = run(command, *args, environ=environ, cwd=tmp_path)
        assert_one_line_error(result, "driver", "is not installed", install)
    library = run([sys.executable, "-c", LIBRARY_SUBMIT % url], environ=environ, cwd=tmp_path)
    assert library.returncode == 0 and library.stderr == "", library.stderr
    assert library.stdout.strip().endswith(install), library.stdout


# -- gta (admin) ----------------------------------------------------------------------------------
def test_migrate_creates_then_is_idempotent(env: Env) -> None:
    table = f"gta_mig_{secrets.token_hex(4)}"
    environ = {**os.environ, "GTA_TABLE": table}
    try:
        first = run(GTA, "migrate", environ=environ)
        assert first.returncode == 0, first.stderr
        assert "created" in first.stdout and table in first.stdout
        assert schema_version(env.db_url, table) == SCHEMA_VERSION
        second = run(GTA, "migrate", environ=environ)
        assert second.returncode == 0, second.stderr
        assert "created" not in second.stdout and f"schema version {SCHEMA_VERSION}" in second.stdout
        submitted = run(GTA, "submit", "record", environ=environ)
        assert submitted.returncode == 0, submitted.stderr
    finally:
        cleanup = Runtime(gta_core.load_settings({"database_url": env.db_url, "table": table}, environ={}))
        cleanup.store.drop()
        cleanup.db.close()


def test_submit_missing_table_says_to_migrate(env: Env) -> None:
    table = f"gta_never_{secrets.token_hex(4)}"
    result = run(GTA, "submit", "record", environ={**os.environ, "GTA_TABLE": table})
    assert_one_line_error(result, "gta migrate")
    assert schema_version(env.db_url, table) is None


def test_submit_prints_id_and_writes_row(env: Env) -> None:
    result = run(GTA, "submit", "record", "--args", '{"n": 1}')
    assert result.returncode == 0, result.stderr
    task_id = int(result.stdout.strip())
    row = env.store.get(task_id)
    assert row is not None
    assert (row["key"], row["status"], json.loads(row["args"])) == ("record", "pending", {"n": 1})
    delayed = run(GTA, "submit", "greet", "--args", '{"name": "Ada"}', "--delay", "5m", "--queue", "mail",
                  "--priority", "3")
    assert delayed.returncode == 0, delayed.stderr
    later = env.store.get(int(delayed.stdout.strip()))
    assert later is not None
    assert (later["queue"], later["priority"]) == ("mail", 3)
    assert later["run_at"] - later["created_at"] >= dt.timedelta(seconds=299)
    assert row_count(env) == 2


@pytest.mark.parametrize("args, fragments", [
    (["record", "--args", "{bad"], ["gta: error", "--args", "JSON"]),
    (["record", "--args", "[1, 2]"], ["gta: error", "dict"]),
    (["record", "--args", '{"m": 1}'], ["gta: error", "'m'"]),
    (["greet"], ["gta: error", "missing"]),
    (["nosuchkey"], ["gta: error", "'nosuchkey'"]),
    (["record", "--delay", "-5"], ["gta submit: error: argument --delay"]),  # refused while parsing
    (["record", "--queue", ""], ["gta: error", "queue"]),
], ids=["bad-json", "not-a-dict", "unexpected-kwarg", "missing-arg", "unknown-key", "negative-delay",
        "empty-queue"])
def test_submit_bad_input_is_one_line_and_writes_nothing(env: Env, args: list[str], fragments: list[str]) -> None:
    result = run(GTA, "submit", *args)
    assert_one_line_error(result, *fragments)
    assert result.stdout == ""
    assert row_count(env) == 0


def test_show_unknown_id(env: Env) -> None:
    result = run(GTA, "show", "999999")
    assert_one_line_error(result, "999999")
    assert result.stdout == ""


def test_show_json(env: Env) -> None:
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 5}, context={"trace": {"id": "t-1"}})
    result = run(GTA, "show", str(task_id), "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert (shown["id"], shown["key"], shown["status"], shown["attempts"]) == (task_id, "record", "pending", 0)
    assert shown["args"] == {"n": 5} and shown["context"] == {"trace": {"id": "t-1"}}  # objects, not JSON text
    plain = run(GTA, "show", str(task_id))
    assert plain.returncode == 0, plain.stderr
    assert "record" in plain.stdout and "pending" in plain.stdout


def test_handlers_lists_every_discovered_task(env: Env) -> None:
    result = run(GTA, "handlers")
    assert result.returncode == 0, result.stderr
    keys = {line.split("(", 1)[0] for line in result.stdout.splitlines() if line.strip()}
    assert {"record", "greet", "example_double"} <= keys
    assert not keys & {"demo_hello", "demo_flaky", "demo_broken"}  # registered by `gta demo` only
    record_line = next(line for line in result.stdout.splitlines() if line.startswith("record("))
    assert "tests.handlers.tasks" in record_line and "max_attempts 3" in record_line
    disabled = run(GTA, "--disable-plugin", "example", "handlers")
    assert disabled.returncode == 0, disabled.stderr
    assert "example_double(" not in disabled.stdout and "record(" in disabled.stdout
    demo = run(GTA, "--plugin", "gta_plugins.demo", "handlers")
    hello = next(line for line in demo.stdout.splitlines() if line.startswith("demo_hello("))
    assert "plugin gta_plugins.demo" in hello and "queue gta_demo" in hello


@pytest.mark.parametrize("plugin, fragment", [
    ("tests.handlers.plugins_bad.unknown_hook", "gta_nonexistent_hook"),
    ("tests.handlers.plugins_bad.bad_hook_args", "bogus"),
    ("tests.handlers.plugins_bad.redefines_record", "'record'"),
    ("tests.handlers.plugins_bad.raises_on_import", "raises_on_import"),
])
def test_bad_plugin_is_one_line(env: Env, plugin: str, fragment: str) -> None:
    for command in (["handlers"], ["submit", "record"]):
        result = run(GTA, "--plugin", "tests.handlers.tasks", "--plugin", plugin, *command)
        assert_one_line_error(result, fragment)
    assert row_count(env) == 0


def test_bad_admin_setting_is_one_line(env: Env) -> None:
    assert_one_line_error(run(GTA, "--table", "bad-name;", "migrate"), "table")
    assert_one_line_error(run(GTA, "migrate", environ={**os.environ, "GTA_DATABASE_URL": "ftp://x"}),
                          "database_url", "GTA_DATABASE_URL")


@pytest.mark.parametrize("url", UNREACHABLE, ids=["postgres", "mysql"])
def test_admin_unreachable_database(tmp_path: Path, url: str) -> None:
    environ = clean_environ(GTA_DATABASE_URL=url, GTA_PLUGINS="tests.handlers.tasks")
    for command in (["migrate"], ["submit", "record"], ["show", "1"]):
        assert_one_line_error(run(GTA, *command, environ=environ, cwd=tmp_path), "cannot reach database", code=1)
    assert list(tmp_path.iterdir()) == []


def test_demo_on_a_fresh_sqlite_database(tmp_path: Path) -> None:
    environ = clean_environ(GTA_DATABASE_URL=f"sqlite:///{tmp_path / 'demo.db'}")
    result = run(GTA, "demo", environ=environ, cwd=tmp_path, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "never existed" in result.stdout
    assert "EXISTS (bug!)" not in result.stdout
    assert "Traceback" not in result.stderr
    statuses = [line.split()[2] for line in result.stdout.splitlines() if line.strip().startswith("task ")
                and "never existed" not in line]
    assert statuses == ["succeeded"] * 4 + ["failed"]


MYAPP_TASKS = '''
from gta_core import hookimpl, task

@task()
def ship(ctx, n: int) -> None:
    pass

@hookimpl
def gta_handlers():
    return [ship]
'''


def test_plugin_of_the_projects_own_directory(tmp_path: Path) -> None:
    """``gta --plugin myapp.tasks`` (and ``GTA_PLUGINS``) from the project's directory finds
    ``myapp`` as Celery's and gunicorn's commands do (the console scripts, whose path starts at
    their bin folder); from elsewhere, one line saying what to do."""
    project = tmp_path / "project"
    (project / "myapp").mkdir(parents=True)
    (project / "myapp" / "__init__.py").write_text("")
    (project / "myapp" / "tasks.py").write_text(MYAPP_TASKS)
    gta = [str(Path(sys.executable).with_name("gta"))]
    environ = clean_environ(GTA_DATABASE_URL=f"sqlite:///{tmp_path / 'gta.db'}")
    environ.pop("PYTHONPATH")
    found = run(gta, "handlers", "--plugin", "myapp.tasks", environ=environ, cwd=project)
    assert found.returncode == 0 and "ship" in found.stdout, found.stdout + found.stderr
    by_variable = run(gta, "handlers", environ={**environ, "GTA_PLUGINS": "myapp.tasks"}, cwd=project)
    assert by_variable.returncode == 0 and "ship" in by_variable.stdout, by_variable.stderr
    elsewhere = assert_one_line_error(run(gta, "handlers", "--plugin", "myapp.tasks", environ=environ, cwd=tmp_path),
                                      "No module named 'myapp'")
    assert f"the working directory {tmp_path} has no 'myapp': run from the directory that contains it" in elsewhere
