"""The import paths users and the docs use keep working, whatever moves inside gta_core; and
every top-level module of gta_core is one a user may import (the rest lives in packages named
after their process or layer: docs/architecture.md)."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
import tomllib

from ..support.paths import IMPORT_ROOT, REPO, gta_core_origin

#: the top-level modules of gta_core, each one a user may import: the public verbs, the plugin
#: contract and the kernel types; a new one is a decision, made here
PUBLIC_MODULES = {
    "admin", "asubmit", "attempts", "cli_supervisor", "config", "errors", "hookspecs", "limit_rules", "limits",
    "outcomes", "plugins", "queues", "results", "runtime", "schedules", "scopes", "status", "submit", "tasks",
    "testing", "validation", "workflows",
}
#: the paths the docs and the examples name
DOCUMENTED = [
    ("gta_core.testing", "eager"),
    ("gta_core.contrib.django", "GTABackend"),
    ("gta_core.store", "TaskStore"),
    ("gta_core.runtime", "Runtime"),
    ("gta_core.runtime", "configure"),
    ("gta_core.hookspecs", "hookimpl"),
]


def test_every_name_in_gta_core_all_imports() -> None:
    import gta_core

    missing = [name for name in gta_core.__all__ if not hasattr(gta_core, name)]
    assert not missing
    for name in ("submit", "submit_many", "asubmit", "status", "attempts", "result", "wait", "group", "chain",
                 "cancel", "task", "periodic", "hookimpl", "TaskContext", "Retry", "Fail", "GTAError",
                 "OWN_TRANSACTION", "transaction", "pause_queue", "limit_queue", "configure"):
        assert name in gta_core.__all__, name


@pytest.mark.parametrize(("module", "name"), DOCUMENTED)
def test_a_documented_path_imports(module: str, name: str) -> None:
    assert hasattr(importlib.import_module(module), name)


def test_the_top_level_modules_are_the_public_ones() -> None:
    package = gta_core_origin().parent
    found = {path.stem for path in package.glob("*.py")} - {"__init__"}
    assert found == PUBLIC_MODULES


def test_the_console_scripts_and_python_m_start() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"gta", "gta-supervisor"}
    for target in scripts.values():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), target
    environ = {**os.environ, "PYTHONPATH": str(IMPORT_ROOT)}
    result = subprocess.run([sys.executable, "-m", "gta_core.cli_supervisor", "--version"], capture_output=True,
                            text=True, env=environ, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("gta-supervisor "), result.stdout


def test_importing_gta_core_loads_no_process_machinery() -> None:
    """``import gta_core`` (every application that submits) loads neither multiprocess nor the
    worker, the supervisor or the command line: their packages' ``__init__`` stay empty."""
    script = ("import sys, gta_core, gta_core.worker, gta_core.supervisor, gta_core.cli\n"
              "loaded = [name for name in ('multiprocess', 'gta_core.worker.process', 'gta_core.supervisor.manager',"
              " 'gta_core.cli.main', 'gta_core.dashboard') if name in sys.modules]\n"
              "print(loaded)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(IMPORT_ROOT)})
    assert result.stdout.strip() == "[]", result.stderr


def test_importing_gta_core_imports_no_driver_and_names_stay_the_functions() -> None:
    """``import gta_core`` imports its public names on first use, peewee (and with it every
    driver) included; a public function stays what ``gta_core.<name>`` is after its module of
    the same name is imported, in either order."""
    script = ("import sys, gta_core\n"
              "assert 'peewee' not in sys.modules, 'peewee'\n"
              "import gta_core.submit, gta_core.status\n"
              "from gta_core import submit, status, attempts, asubmit, limits, queues\n"
              "import gta_core.attempts, gta_core.asubmit, gta_core.limits, gta_core.queues\n"
              "names = ('submit', 'status', 'attempts', 'asubmit', 'limits', 'queues')\n"
              "print([type(getattr(gta_core, name)).__name__ for name in names])\n"
              "assert gta_core.submit is submit and gta_core.attempts is attempts\n"
              "import importlib; assert importlib.import_module('gta_core.submit').__name__ == 'gta_core.submit'\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(IMPORT_ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(["function"] * 6), result.stdout
