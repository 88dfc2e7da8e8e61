"""The admin command line, run as the installed ``gta`` entry point in a subprocess: shared by
the tests of its commands."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


def gta_bin() -> str:
    """The console script pip installed for ``gta = gta_core.cli.main:main``."""
    beside = Path(sys.executable).with_name("gta")
    found = str(beside) if beside.exists() else shutil.which("gta")
    assert found, "the gta entry point is not installed: pip install -e ."
    return found


def environ(**variables: str) -> dict[str, str]:
    """This process's environment (the `env` fixture's GTA_* settings) with the built-ins enabled."""
    return {**os.environ, "GTA_DISABLE_PLUGINS": "", **variables}


def gta(*args: str, env_vars: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([gta_bin(), *args], capture_output=True, text=True, timeout=timeout,
                          env=env_vars if env_vars is not None else environ())


def ok(*args: str, **options: Any) -> str:
    result = gta(*args, **options)
    assert result.returncode == 0, (args, result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str, code: int = 2) -> str:
    """Exit ``code`` (2: usage or configuration, 1: the database) and exactly one line on stderr
    containing every fragment; that line."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip("\n").splitlines()
    assert len(lines) == 1, result.stderr
    assert result.returncode == code, (result.returncode, result.stderr)
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def fails(result: subprocess.CompletedProcess[str], *fragments: str, code: int = 2) -> str:
    """`assert_one_line_error`, and nothing on stdout."""
    line = assert_one_line_error(result, *fragments, code=code)
    assert result.stdout == ""
    return line
