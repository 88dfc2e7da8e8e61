"""GTA as users install it: the built wheel (scripts/test's, or one built here) carries every
file of gta_core/ and gta_plugins/ and the metadata pyproject.toml declares, and installed into
a fresh venv (no -e, nothing of the checkout on the path) its commands run: ``gta --version``,
``gta-supervisor --version`` and ``gta demo`` to its summary."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from ..support.paths import REPO

PACKAGES = ("gta_core", "gta_plugins")
EXTRAS = {"postgres", "mysql", "asyncio", "sqlalchemy", "django", "otel", "flask", "fastapi", "test", "lint", "bench"}
HANDLERS = {"retry": "gta_plugins.retry", "metrics": "gta_plugins.metrics", "request_id": "gta_plugins.request_id",
            "otel": "gta_plugins.otel:plugin", "monitor": "gta_plugins.monitor", "cleanup": "gta_plugins.cleanup"}
SCRIPTS = {"gta": "gta_core.cli.main:main", "gta-supervisor": "gta_core.cli.supervisor_command:supervisor_main"}


def source_version() -> str:
    """``__version__`` as written in the checkout's gta_core/__init__.py."""
    tree = ast.parse((REPO / "gta_core" / "__init__.py").read_text())
    [value] = [node.value.value for node in tree.body if isinstance(node, ast.Assign)  # type: ignore[attr-defined]
               and [getattr(target, "id", None) for target in node.targets] == ["__version__"]]
    return str(value)


def shipped_files() -> set[str]:
    """Every file of the packages in the source tree (modules, templates, assets, py.typed), as
    the wheel names it; caches and compiled files are not sources."""
    return {path.relative_to(REPO).as_posix() for package in PACKAGES for path in (REPO / package).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo")}


def clean_environ() -> dict[str, str]:
    """An environment with nothing of GTA's settings or of the checkout's path."""
    return {name: value for name, value in os.environ.items()
            if not name.startswith("GTA_") and name not in ("PYTHONPATH", "PYTHONSAFEPATH", "VIRTUAL_ENV")}


def run(command: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, cwd=cwd, env=clean_environ(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-4000:]}\n"
                                  f"{done.stderr[-4000:]}")
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the sdist and the wheel: scripts/test's build, or one made here."""
    wheel = os.environ.get("GTA_TEST_WHEEL")
    if wheel:
        return Path(wheel).parent
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)], cwd=REPO)
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    [found] = dist.glob("gta-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed (its dependencies from the package index)."""
    root = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", str(root / "v")], cwd=root)
    run([str(root / "v" / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)], cwd=root)
    return root / "v"


def test_the_wheel_ships_every_file_of_the_packages_and_nothing_else(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    packaged = {name for name in names if name.split("/")[0] in PACKAGES}
    missing = shipped_files() - packaged
    assert not missing, f"left out of {wheel.name}: {sorted(missing)}"
    extra = packaged - shipped_files()
    assert not extra, f"in {wheel.name} but not in the source tree: {sorted(extra)}"
    assert {"gta_core/py.typed", "gta_plugins/py.typed", "gta_core/dashboard/templates/base.html",
            "gta_core/dashboard/static/style.css", "gta_core/supervisor/services/__init__.py"} <= packaged
    others = {name.split("/")[0] for name in names} - set(PACKAGES)
    assert others == {f"gta-{source_version()}.dist-info"}, others  # no tests/, examples/, benchmarks/


def test_the_wheels_metadata_is_pyprojects(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        info = f"gta-{source_version()}.dist-info"
        metadata = Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        licenses = [name for name in archive.namelist() if name.startswith(f"{info}/licenses/")]
    assert metadata["Name"] == "gta" and metadata["Version"] == source_version()
    assert metadata["Requires-Python"] == ">=3.10"
    assert metadata["License-Expression"] == "MIT" and licenses == [f"{info}/licenses/LICENSE"]
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert "scripts/test" in metadata.get_payload()  # the README is the long description
    assert set(metadata.get_all("Provides-Extra")) == EXTRAS
    requires = metadata.get_all("Requires-Dist")
    assert {"peewee>=4.5", "pluggy>=1.3", "multiprocess>=0.70.15", "prometheus-client>=0.17"} <= set(requires)
    assert 'psycopg2-binary>=2.9; extra == "postgres"' in requires
    for name, target in {**SCRIPTS, **HANDLERS}.items():
        assert f"{name} = {target}" in entry_points


def test_the_sdist_builds_the_same_packages(dist: Path) -> None:
    [sdist] = dist.glob("gta-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"pyproject.toml", "README.md", "LICENSE"} <= names
    assert shipped_files() <= names, sorted(shipped_files() - names)


def test_the_installed_wheel_runs_its_commands(venv: Path, tmp_path: Path) -> None:
    """Installed with no -e into a fresh venv: the version everywhere, and `gta demo` to its summary."""
    bin_dir = venv / "bin"
    where = run([str(bin_dir / "python"), "-c", "import gta_core; print(gta_core.__file__)"], cwd=tmp_path).stdout
    assert Path(where.strip()).is_relative_to(venv) and "site-packages" in where, where
    assert run([str(bin_dir / "gta"), "--version"], cwd=tmp_path).stdout.strip() == f"gta {source_version()}"
    assert run([str(bin_dir / "gta-supervisor"), "--version"], cwd=tmp_path).stdout.strip() == (
        f"gta-supervisor {source_version()}")
    demo = run([str(bin_dir / "gta"), "--database-url", f"sqlite:///{tmp_path / 'demo.db'}", "demo"], cwd=tmp_path)
    assert "Traceback" not in demo.stderr, demo.stderr
    lines = demo.stdout.splitlines()
    summary = lines[lines.index("what became of each task:") + 1:]
    statuses = [line.split()[2] for line in summary if line.strip().startswith("task ") and "never existed" not in line]
    assert statuses == ["succeeded"] * 4 + ["failed"], demo.stdout
    assert summary[-1].strip().endswith("never existed  (rolled back)"), demo.stdout
