"""Django 6 (``django.tasks``, Python 3.12): Django's own ``tests/tasks`` suite against GTABackend
with a real ``gta-supervisor``, and this project's Django tests, in a Python 3.12 environment
of their own (``.venv-django6``: GTA, its test dependencies and ``django>=6,<6.1``; made on
first use, kept while pyproject.toml is unchanged; under
``scripts/test`` GTA is its built wheel, reinstalled each run).

Django's suite comes from the source distribution of the Django version installed there
(``pip download --no-binary :all: django==X``; its tests/runtests.py, tests/urls.py,
tests/tasks/ and LICENSE, BSD-3-Clause), and runs unchanged under `tests.support.django_suite`, which says what it
changes. The suite's summary line per database is printed in pytest's closing summary.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import re
import secrets
import subprocess
import tarfile
from pathlib import Path

import pytest

from ..support.backends import only_on
from ..support.django_suite.skips import SKIPPED
from ..support.paths import IMPORT_ROOT, INSTALLED, REPO

VENV = REPO / ".venv-django6"
REQUIREMENTS = ("django>=6,<6.1",)
PROJECT_TESTS = ["tests/process/test_django_tasks.py", "tests/process/test_examples.py",
                 "tests/process/test_handles.py", "-k", "django or Django"]
INSTALL_TIMEOUT = 600
SUITE_TIMEOUT = 300
#: what runtests.py needs of Django's tests/ to run tests/tasks, and Django's license (BSD-3-Clause)
SUITE_FILES = r"LICENSE|tests/runtests\.py|tests/urls\.py|tests/tasks/.*"
#: a skipped test in runtests' verbose output: "test_x (tasks.module.Class.test_x) ... skipped 'why'"
SKIP_LINE = r"^(test_\w+) \(tasks\.\w+\.(\w+)\.test_\w+\) \.\.\. skipped (['\"])(.*)\3$"


@dataclasses.dataclass(frozen=True)
class Django6:
    python: Path  # the environment's interpreter
    tests: Path  # Django's tests/ directory (runtests.py, tasks/)
    version: str


def find_python312() -> str | None:
    """A Python 3.12 interpreter: ``GTA_TEST_PYTHON312``, ``python3.12`` on the PATH, or pyenv's."""
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = [os.environ.get("GTA_TEST_PYTHON312"), "python3.12",
                  *sorted(glob.glob(f"{pyenv_root}/versions/3.12*/bin/python3.12"), reverse=True)]
    for candidate in filter(None, candidates):
        try:
            probe = subprocess.run([candidate, "-c", "import sys, venv; assert sys.version_info[:2] == (3, 12)"],
                                   capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return candidate
    return None


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise AssertionError(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-4000:]}\n"
                             f"{done.stderr[-4000:]}")
    return done


@pytest.fixture(scope="session")
def django6(tmp_path_factory: pytest.TempPathFactory) -> Django6:
    python = find_python312()
    if python is None:
        message = ("Django 6 tests need Python 3.12: install python3.12 (with its venv module) or set "
                   "GTA_TEST_PYTHON312=/path/to/python3.12")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    wheel = os.environ.get("GTA_TEST_WHEEL")  # scripts/test's build: GTA installed as users install it
    venv_python = VENV / "bin" / "python"
    if not venv_python.exists():
        _run([python, "-m", "venv", str(VENV)], INSTALL_TIMEOUT)
    if INSTALLED and not wheel:  # tox: a wheel of this checkout, as the suite here tests an install
        out = tmp_path_factory.mktemp("wheel")
        _run([str(venv_python), "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(REPO)],
             INSTALL_TIMEOUT)
        wheel = str(next(out.glob("gta-*.whl")))
    gta = f"{wheel}[test]" if wheel else f"{REPO}[test]"
    stamp = hashlib.sha256((REPO / "pyproject.toml").read_bytes() + repr((REQUIREMENTS, bool(wheel))).encode()
                           ).hexdigest()
    if not (VENV / "stamp").exists() or (VENV / "stamp").read_text() != stamp:
        _run([str(venv_python), "-m", "pip", "install", "--quiet", *([] if wheel else ["-e"]), gta, "-e",
              str(REPO / "tests" / "handlers" / "example_pkg"), *REQUIREMENTS], INSTALL_TIMEOUT)
        (VENV / "stamp").write_text(stamp)
    if wheel:  # this build's code, every run (the stamp covers only the dependencies)
        _run([str(venv_python), "-m", "pip", "install", "--quiet", "--force-reinstall", "--no-deps", wheel],
             INSTALL_TIMEOUT)
    version = _run([str(venv_python), "-c", "import django; print(django.__version__)"], 60).stdout.strip()
    source = VENV / f"django-{version}"
    if not (source / "tests" / "runtests.py").exists():
        _run([str(venv_python), "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
              "--dest", str(VENV / "sdist"), f"django=={version}"], INSTALL_TIMEOUT)
        (archive,) = (VENV / "sdist").glob(f"[dD]jango-{version}.tar.gz")
        wanted = re.compile(rf"django-{re.escape(version)}/({SUITE_FILES})$", re.I)
        with tarfile.open(archive) as tar:
            members = [member for member in tar.getmembers() if wanted.match(member.name)]
            for member in members:  # extracted under source/, whatever the archive's top folder is called
                member.name = member.name.split("/", 1)[1]
            tar.extractall(source, members=members, filter="data")
    return Django6(venv_python, source / "tests", version)


@pytest.mark.parametrize("database", ["sqlite", only_on("postgres")])
def test_djangos_own_tasks_suite_passes_against_gtabackend(django6: Django6, database: str, tmp_path: Path,
                                                         record_property: pytest.RecordProperty) -> None:
    """Every test of Django's tests/tasks passes with GTABackend and a real supervisor, except
    those skipped for testing a behaviour of Django's dummy or immediate backend alone."""
    if database == "sqlite":
        url, test_name = f"sqlite:///{tmp_path / 'django.db'}", str(tmp_path / "test-django.db")
    else:
        url, test_name = os.environ["GTA_TEST_POSTGRES_URL"], f"test_gta_django_{secrets.token_hex(4)}"
    environ = {**os.environ, "GTA_DATABASE_URL": url, "GTA_SUITE_TEST_NAME": test_name,
               "GTA_SUITE_LOG_DIR": str(tmp_path), "PYTHONPATH": os.environ.get("PYTHONPATH") or str(IMPORT_ROOT)}
    # PYTHONSAFEPATH too: Django's runtests.py imports its neighbours through the script's folder
    # on the path (the checkout is not on it: the working directory is Django's tests/)
    for name in ("DJANGO_SETTINGS_MODULE", "GTA_PLUGINS", "GTA_TABLE", "PYTHONSAFEPATH"):
        environ.pop(name, None)
    done = subprocess.run([str(django6.python), "runtests.py", "tasks",
                           "--settings=tests.support.django_suite.settings", "--parallel=1", "--verbosity=2",
                           "--noinput"], cwd=django6.tests, env=environ,
                          capture_output=True, text=True, timeout=SUITE_TIMEOUT)
    output = done.stdout + done.stderr
    summary = re.search(r"^(Ran \d+ tests? in [\d.]+s)\s+^(OK.*|FAILED.*)$", output, re.M)
    assert done.returncode == 0 and summary, f"Django's suite failed:\n{output[-12000:]}"
    record_property("django_suite", f"Django {django6.version} tests/tasks on {database}: "
                                    f"{summary.group(1)}, {summary.group(2)}")
    skipped = {f"{cls}.{name}": reason for name, cls, _, reason in re.findall(SKIP_LINE, output, re.M)}
    assert skipped == SKIPPED  # exactly the listed tests, each for its stated reason
    assert int(summary.group(1).split()[1]) >= 60  # the suite ran (66 of 76 in Django 6.0)


def test_this_projects_django_tests_pass_on_django6(django6: Django6, record_property: pytest.RecordProperty) -> None:
    environ = {**os.environ}
    for name in ("DJANGO_SETTINGS_MODULE", "GTA_PLUGINS", "GTA_TABLE", "GTA_DATABASE_URL"):
        environ.pop(name, None)
    installed = ["--import-mode=append"] if INSTALLED else []  # as scripts/test runs the suite: the wheel's gta_core
    done = subprocess.run([str(django6.python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *installed,
                           *PROJECT_TESTS],
                          cwd=REPO, env=environ, capture_output=True, text=True, timeout=SUITE_TIMEOUT * 3)
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, f"on Django {django6.version}:\n{done.stdout[-12000:]}\n{done.stderr[-4000:]}"
    assert " passed" in last, last
    record_property("django_suite", f"this project's Django tests on Django {django6.version}, Python 3.12: {last}")
