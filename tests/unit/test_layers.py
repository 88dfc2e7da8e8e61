"""The import-layer check (scripts/check_layers.py, run by .ci/run) passes on gta_core and
fails on a planted upward import, a planted cycle and a module no layer names."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..support.paths import REPO

CHECK = REPO / "scripts" / "check_layers.py"


def check(package_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECK), str(package_dir)], capture_output=True, text=True, timeout=60)


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A copy of the checkout's gta_core to plant imports in."""
    return Path(shutil.copytree(REPO / "gta_core", tmp_path / "gta_core"))


def test_gta_core_keeps_its_layers() -> None:
    result = check(REPO / "gta_core")
    assert result.returncode == 0, result.stdout
    assert "0 problem(s)" in result.stderr


def test_an_upward_import_fails_naming_it(copy: Path) -> None:
    with (copy / "store" / "rows.py").open("a") as module:
        module.write("\n\ndef _planted() -> None:\n    from ..cli.main import main  # noqa: F401\n")
    result = check(copy)
    assert result.returncode == 1
    assert "gta_core.store.rows (store) imports gta_core.cli.main, a layer above it (command line)" in result.stdout


def test_a_cycle_within_a_layer_fails(copy: Path) -> None:
    with (copy / "plugins.py").open("a") as module:
        module.write("\n\ndef _planted() -> None:\n    from .runtime import get_runtime  # noqa: F401\n")
    result = check(copy)
    assert result.returncode == 1
    assert "import cycle among: gta_core.plugins, gta_core.runtime" in result.stdout


def test_an_import_under_type_checking_is_no_dependency(copy: Path) -> None:
    with (copy / "store" / "rows.py").open("a") as module:
        module.write("\nfrom typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from ..cli.main import main\n")
    assert check(copy).returncode == 0


def test_a_module_no_layer_names_fails(copy: Path) -> None:
    (copy / "helpers.py").write_text('"""Planted."""\n')
    result = check(copy)
    assert result.returncode == 1
    assert "gta_core.helpers: no layer in scripts/check_layers.py names it" in result.stdout
