"""Where the suite's code comes from: the checkout's tests, and GTA either from the checkout
(a developer's quick loop: ``python -m pytest`` puts the checkout first on the path) or, with
``GTA_TEST_INSTALLED=1`` (``scripts/test``, tox), from the installed wheel in site-packages.

Installed, no process of the suite may put the checkout on its path, or it would import the
checkout's ``gta_core`` beside the wheel's: processes the tests start get ``IMPORT_ROOT`` on
``PYTHONPATH`` instead, a folder holding links to ``tests/``, ``examples/`` and ``benchmarks/`` only, and
``PYTHONSAFEPATH=1`` (no working directory or script folder put first). Imports no GTA module.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INSTALLED = bool(os.environ.get("GTA_TEST_INSTALLED"))
#: what the suite's child processes put on PYTHONPATH to import ``tests.*`` and ``examples.*``
IMPORT_ROOT = REPO / ".pytest-path" if INSTALLED else REPO
LINKED = ("tests", "examples", "benchmarks")  # benchmarks: tests/process/test_sqlite_writers.py's writers


def gta_core_origin() -> Path:
    """The ``gta_core/__init__.py`` this process imports (or would), without importing it."""
    spec = importlib.util.find_spec("gta_core")
    assert spec is not None and spec.origin, "gta_core is not importable"
    return Path(spec.origin).resolve()


def in_checkout(path: Path) -> bool:
    return path.is_relative_to(REPO / "gta_core") or path.is_relative_to(REPO / "gta_plugins")


def check_installed() -> None:
    """Installed mode: raise if this process would import the checkout's ``gta_core``."""
    if INSTALLED and in_checkout(gta_core_origin()):
        raise ImportError(f"GTA_TEST_INSTALLED is set but gta_core comes from the checkout ({gta_core_origin()}), "
                          f"not the installed wheel: run scripts/test (pytest --import-mode=append, PYTHONSAFEPATH=1)")


def child_pythonpath() -> str:
    """PYTHONPATH for a process the suite starts: ``IMPORT_ROOT`` first, then this process's."""
    inherited = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    return os.pathsep.join(dict.fromkeys(filter(None, [str(IMPORT_ROOT), *inherited])))


def prepare_import_root() -> None:
    """Installed mode: the links of ``IMPORT_ROOT`` and this process's environment for children."""
    if not INSTALLED:
        return
    IMPORT_ROOT.mkdir(exist_ok=True)
    for name in LINKED:
        link = IMPORT_ROOT / name
        if not link.is_symlink():
            link.symlink_to(REPO / name, target_is_directory=True)
    paths = [str(IMPORT_ROOT), *(entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                 if entry and Path(entry).resolve() != REPO)]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    os.environ["PYTHONSAFEPATH"] = "1"
