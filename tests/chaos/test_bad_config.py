"""Property: any value of any setting, from Python, the environment or a command line, gives
valid `Settings` or a one-line `ConfigError` naming the setting; any command line of ``gta``
or ``gta-supervisor`` runs, or exits 2 with one line on stderr naming what was wrong, never a
traceback, and a refused ``gta`` command writes nothing.

Complements tests/process/test_config_cli.py (one example per rule): here values are random.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, event, example, given, settings

import gta_core
from gta_core import runtime as runtime_module
from gta_core.cli import main as cli
from gta_core.cli import supervisor_command
from gta_core.config import SETTINGS, SETTINGS_BY_NAME, Settings

from ..support.helpers import Env
from ..support.paths import IMPORT_ROOT

pytestmark = pytest.mark.chaos

DURATIONS = {s.name for s in SETTINGS if s.metavar == "DURATION"}
INTEGERS = {s.name for s in SETTINGS if s.metavar in ("N", "T")}
LIMIT = 100 * 365.25 * 86400  # the longest duration a setting takes (100 years)

raw_texts = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["0", "1", "-1", "1.5", "30s", "250ms", "5m", "7d", "1e3", "nan", "inf", "9" * 400, "9" * 5000,
                     "99999999999d", "1_000", " 7 ", "\u0663", "\u00b2", "on", "off", "yes", "DEBUG", "info",
                     "default", "a,b", " , ,", "127.0.0.1:9464", "host:99999", "sqlite:///x.db", "ftp://x",
                     "gta_tasks", "bad-name;", "x" * 60, "\ufeff5", "5\n", "1,2"]),
)
raw_values = st.one_of(
    raw_texts, st.none(), st.booleans(), st.integers(), st.floats(), st.sampled_from([10**400, 2**63, -0.0]),
    st.lists(st.text(max_size=3) | st.integers(), max_size=3), st.tuples(st.integers()), st.binary(max_size=3),
    st.builds(object),
)
setting_names = st.sampled_from(sorted(SETTINGS_BY_NAME))


def assert_valid(found: Settings) -> None:
    """What every accepted Settings must satisfy, whatever it was built from."""
    for name in DURATIONS:
        value = getattr(found, name)
        assert isinstance(value, float) and math.isfinite(value) and 0 <= value <= LIMIT, (name, value)
    for name in INTEGERS:
        value = getattr(found, name)
        assert isinstance(value, int) and not isinstance(value, bool) and value >= 0, (name, value)
    for name in ("queues", "plugins", "disable_plugins"):
        value = getattr(found, name)
        assert isinstance(value, tuple) and all(isinstance(item, str) and item for item in value), (name, value)
    assert found.queues and found.instant_scan_interval <= found.scan_interval
    assert found.replace() == found  # an accepted Settings validates again unchanged


# -- settings ---------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@example(overrides={"queues": [1, 2]}, environ={})
@example(overrides={"lease_timeout": "9" * 400}, environ={})
@example(overrides={}, environ={"GTA_STORAGE_TIMEOUT": "99999999999d"})
@example(overrides={1: "x", "wrokers": 2}, environ={})
@given(overrides=st.dictionaries(setting_names | st.text(max_size=5) | st.integers(), raw_values, max_size=4),
       environ=st.dictionaries(setting_names.map(lambda name: SETTINGS_BY_NAME[name].env) | st.text(max_size=5),
                               raw_texts, max_size=4))
def test_any_setting_value_is_valid_or_a_config_error_naming_it(overrides: dict[Any, Any],
                                                                environ: dict[str, str]) -> None:
    """Random overrides (any Python value, unknown names) and GTA_* variables (any text)."""
    try:
        found = gta_core.load_settings(overrides, environ=environ)
    except gta_core.ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and exc.rule in message
        named = exc.setting.split(" (")[0]  # "workers (GTA_WORKERS='x')" or an unknown name as given
        given_names = {str(name) for name in overrides} | {repr(name) for name in overrides} | {
            name[4:].lower() for name in environ}
        assert named in given_names | {"instant_scan_interval"}, (named, message)
        return
    assert_valid(found)


# -- gta-supervisor -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Part:
    """Some command-line arguments; ``names``: argparse refuses them, and its line names one."""

    argv: tuple[str, ...]
    names: tuple[str, ...] = ()


flag_values = st.builds(lambda name, value: Part((SETTINGS_BY_NAME[name].flag, value)),
                        st.sampled_from([s.name for s in SETTINGS if s.name != "database_url"]),
                        raw_texts.filter(lambda text: not text.startswith("-")))
argparse_errors = st.sampled_from([
    Part(("--bogus-flag",), ("--bogus-flag",)),
    Part(("stray",), ("stray",)),
    Part(("--workers",), ("--workers",)),  # no value
    Part(("--workers", "\udcff")),  # an undecodable byte, as Python passes it: a settings error
])
good_parts = st.sampled_from([Part(("--workers", "1")), Part(("--threads", "3")), Part(("--queues", "a,b")),
                              Part(("--no-metrics",)), Part(("--lease-timeout", "45s")),
                              Part(("--log-level", "warning")), Part(("--plugin", "tests.handlers.tasks"))])


@contextlib.contextmanager
def captured_stderr() -> Iterator[io.StringIO]:
    with contextlib.redirect_stderr(io.StringIO()) as stream:
        yield stream


def run_in_process(main: Any, argv: list[str]) -> tuple[int, str]:
    """Run a CLI's main function; its exit code and stderr (argparse exits via SystemExit)."""
    with captured_stderr() as stderr:
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, stderr.getvalue()


def assert_one_line_naming(code: int, stderr: str, prog: str, names: tuple[str, ...]) -> None:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip("\n").splitlines()
    assert code == 2 and len(lines) == 1, (code, stderr)
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    assert any(name in lines[0] for name in names), (names, lines[0])


@settings(max_examples=100, deadline=None)
@example(parts=[Part(("--lease-timeout", "9" * 400))])
@example(parts=[Part(("--workers", "")), Part(("--workers", "1"))])
@given(parts=st.lists(good_parts | flag_values, max_size=3).flatmap(
    lambda good: st.one_of(st.just(good), (flag_values | argparse_errors).map(lambda bad: [*good, bad]))))
def test_supervisor_command_line_starts_or_names_the_problem(parts: list[Part]) -> None:
    """Valid flags with at most one bad part: exit 0 with valid settings (the supervisor itself
    is replaced: it would spawn workers), or exit 2 with one line naming the bad flag or setting."""
    started: list[Settings] = []

    def fake_run(runtime: Any, **options: Any) -> int:  # the real one would spawn workers
        started.append(runtime.settings)
        return 0

    argv = [arg for part in parts for arg in part.argv]
    environ = {name: value for name, value in os.environ.items() if not name.startswith("GTA_")}
    try:
        with mock.patch.dict(os.environ, environ, clear=True), \
                mock.patch("gta_core.supervisor.manager.run_supervisor", fake_run):
            code, stderr = run_in_process(supervisor_command.supervisor_main, argv)
    finally:
        runtime_module.reset()
    event(f"exit {code}")
    # argparse errors come first; then settings are validated (a later flag wins, as in argparse)
    bad = [name for part in parts for name in part.names]
    if not bad:
        try:
            gta_core.load_settings(overrides_of(parts), environ={})
        except gta_core.ConfigError as exc:
            bad = [exc.setting.split(" (")[0]]
    if not bad:
        assert (code, stderr) == (0, ""), (argv, stderr)
        assert len(started) == 1
        assert_valid(started[0])
        return
    assert not started
    assert_one_line_naming(code, stderr, "gta-supervisor", tuple(bad))


def overrides_of(parts: list[Part]) -> dict[str, str]:
    """The settings the parts set."""
    overrides = {}
    for part in parts:
        if part.argv == ("--no-metrics",):
            overrides["metrics"] = "off"
        elif len(part.argv) == 2 and part.argv[0] != "--plugin":
            overrides[part.argv[0][2:].replace("-", "_")] = part.argv[1]
    return overrides


# -- gta (admin) ----------------------------------------------------------------------------------
def row_count(env: Env) -> int:
    return int(env.runtime.db.execute_sql(f"SELECT COUNT(*) FROM {env.table}").fetchone()[0])


def value_parts(text: str) -> st.SearchStrategy[list[str]]:
    """Admin commands with one random value in a typed slot."""
    return st.sampled_from([
        ["show", text], ["list", "--limit", text], ["list", "--status", text], ["purge", "--older-than", text],
        ["submit", "record", "--args", text], ["submit", "record", "--delay", text],
        ["submit", "record", "--priority", text], ["submit", "record", "--queue", text], ["submit", text],
        ["cancel", text], ["retry", text], ["retry", "--status", text], ["stats", "--interval", text],
        ["--table", text, "list"], ["--log-level", text, "list"], ["--plugin", text, "handlers"],
    ])


fixed_commands = st.sampled_from([
    [], ["frobnicate"], ["show"], ["cancel"], ["retry"], ["retry", "1", "--status", "failed"], ["purge"],
    ["submit"], ["list", "--limit"], ["list", "--json", "extra"], ["handlers", "--bogus"], ["migrate", "now"],
    ["list"], ["handlers"], ["stats"], ["submit", "record"], ["purge", "--older-than", "7d"],
])
admin_values = st.one_of(raw_texts, st.text(max_size=20).map(json.dumps),
                         st.builds(json.dumps, st.dictionaries(st.sampled_from(["n", "m"]), st.integers(), max_size=2)),
                         st.sampled_from(["[1]", '{"n": NaN}', '{"n": 1e999}', "{bad", "[" * 5000, "-5"]))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(argv=["show", "9" * 30])  # beyond the 64-bit id column: SQLite's driver raised OverflowError
@example(argv=["cancel", "1", "9" * 30])
@example(argv=["retry", "9" * 30])
@example(argv=["list", "--limit", "9" * 30])
@example(argv=["submit", "record", "--args", "[" * 100_000])  # json.loads raised RecursionError
@given(argv=fixed_commands | admin_values.filter(lambda text: not text.startswith("-")).flatmap(value_parts))
def test_admin_command_line_runs_or_names_the_problem_and_writes_nothing(env: Env, argv: list[str]) -> None:
    """Every command with random values in its typed slots, on a real table: exit 0 (a submit
    adds exactly its row) or exit 2 with one line and nothing written."""
    before = row_count(env)
    with captured_stderr() as stderr, contextlib.redirect_stdout(io.StringIO()) as stdout, \
            mock.patch.object(runtime_module, "_current", env.runtime):  # main() configures its own
        try:
            code = cli.main(argv)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        used = runtime_module.get_runtime()
    if used is not env.runtime and "db" in used.__dict__:
        used.db.close()
    errors = stderr.getvalue()
    event(f"{argv[:1]} exit {code}")
    assert "Traceback" not in errors, errors
    if code == 0:
        if argv[:1] == ["submit"]:
            task_id = int(stdout.getvalue())
            assert row_count(env) == before + 1 and env.store.get(task_id) is not None
        return
    lines = errors.strip("\n").splitlines()
    assert code == 2 and len(lines) == 1, (argv, code, errors)
    assert lines[0].startswith("gta"), lines[0]
    assert row_count(env) == before


def test_real_commands_refuse_bad_input_in_one_line(tmp_path: Path) -> None:
    """The installed entry points as processes: undecodable bytes and absurd values."""
    environ = {name: value for name, value in os.environ.items() if not name.startswith("GTA_")}
    environ["PYTHONPATH"] = str(IMPORT_ROOT)
    environ["GTA_DATABASE_URL"] = f"sqlite:///{tmp_path / 'never.db'}"
    cases = [
        ([sys.executable, "-m", "gta_core.cli_supervisor", "--workers", b"\xff\xfe"], "workers"),
        ([sys.executable, "-m", "gta_core.cli_supervisor", "--lease-timeout", "9" * 400], "lease_timeout"),
        ([sys.executable, "-m", "gta_core.cli_supervisor", "--queues", ","], "queues"),
        ([str(Path(sys.executable).parent / "gta"), "list", "--limit", b"\xff"], "--limit"),
        ([str(Path(sys.executable).parent / "gta"), "purge", "--older-than", "9" * 400], "--older-than"),
    ]
    for command, name in cases:
        result = subprocess.run(command, capture_output=True, env=environ, cwd=tmp_path, timeout=60)
        stderr = result.stderr.decode(errors="replace")
        assert "Traceback" not in stderr, stderr
        assert result.returncode == 2 and len(stderr.strip().splitlines()) == 1, (command, stderr)
        assert name in stderr, stderr
    assert list(tmp_path.iterdir()) == []
