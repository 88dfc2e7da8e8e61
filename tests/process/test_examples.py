"""The recipes in examples/ run as examples/README.md tells a person to: its shell lines, as they
are, from a folder holding ``examples/`` as the working directory (nothing on PYTHONPATH), with
this venv's commands. Each recipe: one order served and its receipt written by a real
supervisor. On PostgreSQL and MariaDB only the exported URLs are swapped; the port is a free one.
The install line is not run (this venv has the test extra): the extra it names must declare
every distribution the recipe imports, which this venv shows it importing."""
from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.metadata import packages_distributions, requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from gta_core.config import load_settings
from gta_core.runtime import Runtime

from ..support.helpers import Env, wait_for
from ..support.paths import REPO

README = REPO / "examples" / "README.md"
RECIPES = {"flask": ("Flask + Flask-SQLAlchemy", "examples/flask_sqlalchemy"),
           "fastapi": ("FastAPI (async endpoint)", "examples/fastapi"),
           "django": ("Django (`django.tasks`)", "examples/django")}
SQLALCHEMY_DRIVERS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql"}
ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "mysql": "mysql+aiomysql"}
TIMEOUT = 60


def readme_lines(recipe: str) -> list[str]:
    """The shell lines of the recipe's section of examples/README.md."""
    heading = RECIPES[recipe][0]
    section = README.read_text().split(f"## {heading}\n", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, f"no ```sh block under '## {heading}' in {README}"
    return block.group(1).strip().splitlines()


def sqlalchemy_url(gta_url: str, drivers: dict[str, str]) -> str:
    scheme, rest = gta_url.split(":", 1)
    return f"{drivers[scheme]}:{rest}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def imported_distributions(folder: Path) -> set[str]:
    """The distributions whose top-level modules the recipe's modules import when loaded (GTA
    aside; not a fallback in ``except ImportError`` nor an import inside a function, such as
    the MySQL driver's, which the server's extra brings)."""
    found = set()
    owners = packages_distributions()
    for path in [*folder.rglob("*.py"), REPO / "examples" / "receipts.py"]:
        statements = ast.parse(path.read_text()).body
        statements += [inner for node in statements if isinstance(node, ast.Try) for inner in node.body]
        for node in statements:
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("gta_core", "examples"):
                    found.update(owner.lower() for owner in owners.get(top, [top]))
    return found


def declared(extra: str) -> set[str]:
    """The distributions gta's ``extra`` installs on this Python (from the installed metadata)."""
    names = set()
    for line in requires("gta") or []:
        requirement = Requirement(line)
        if requirement.marker and requirement.marker.evaluate({"extra": extra}) \
                and not requirement.marker.evaluate({"extra": ""}):
            names.add(requirement.name.lower())
    return names


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_each_recipes_install_line_names_an_extra_with_what_it_imports(recipe: str) -> None:
    install = readme_lines(recipe)[0]
    extra = re.fullmatch(r"python3 -m venv \.venv-shop && \. \.venv-shop/bin/activate && pip install '\.\[(\w+)\]'",
                         install)
    assert extra, install
    extra_installs = declared(extra.group(1))
    # what a declared distribution requires comes with it (pydantic with fastapi, werkzeug with flask)
    extra_installs |= {name for declared_name in set(extra_installs) for name in requires_of(declared_name)}
    missing = imported_distributions(REPO / RECIPES[recipe][1]) - extra_installs
    assert not missing, f"gta[{extra.group(1)}] does not install {sorted(missing)}, which {recipe} imports"


def requires_of(name: str) -> set[str]:
    """The distributions ``name`` (installed here) requires, extras aside."""
    return {requirement.name.lower() for requirement in map(Requirement, requires(name) or [])
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""})}


class Shell:
    """Runs a recipe's lines as a person's shell would: ``export`` sets the session's variables,
    ``… &`` starts a background process (stopped at the end), any other line runs to its end."""

    def __init__(self, cwd: Path, environ: dict[str, str]) -> None:
        self.cwd, self.environ = cwd, environ
        self.background: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def run(self, line: str) -> str:
        if line.startswith("export "):
            for assignment in shlex.split(line)[1:]:
                name, value = assignment.split("=", 1)
                self.environ[name] = value
            return ""
        if line.endswith(" &"):
            log = self.cwd / f"background-{len(self.background)}.log"
            with open(log, "wb") as out:
                popen = subprocess.Popen(["bash", "-c", line[:-2]], cwd=self.cwd, env=self.environ,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            self.background.append((line, popen, log))
            return ""
        done = subprocess.run(["bash", "-c", line], cwd=self.cwd, env=self.environ, capture_output=True, text=True,
                              timeout=TIMEOUT)
        assert done.returncode == 0, f"{line!r} exited {done.returncode}:\n{done.stdout}\n{done.stderr}\n{self.logs()}"
        return done.stdout

    def logs(self) -> str:
        return "\n".join(f"--- {line}\n{log.read_text(errors='replace')[-3000:]}" for line, _, log in self.background)

    def stop(self) -> None:
        for _, popen, _ in reversed(self.background):
            if popen.poll() is None:
                os.killpg(popen.pid, signal.SIGTERM)
        for _, popen, _ in self.background:
            try:
                popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(popen.pid, signal.SIGKILL)
                popen.wait()


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """A folder as the repository root is to the recipes: ``examples/`` in it."""
    root = tmp_path / "shop"
    shutil.copytree(REPO / "examples", root / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def forget_orders(env: Env) -> None:
    """No orders' table, and no record of the Django recipe's migration that made one."""
    env.runtime.db.execute_sql("DROP TABLE IF EXISTS example_orders")
    if "django_migrations" in env.runtime.db.get_tables():
        env.runtime.db.execute_sql("DELETE FROM django_migrations WHERE app = 'shop'")


@pytest.fixture
def orders_table(env: Env) -> Iterator[None]:
    forget_orders(env)
    yield
    forget_orders(env)


def swap(line: str, env: Env, port: int) -> str:
    """The README's line with this test's database and a free port."""
    line = re.sub(r"\b(5000|8000|8001)\b", str(port), line)
    if env.db_url.startswith("sqlite"):
        return line  # the README's own relative sqlite:///shop.db, in the shop folder
    urls = {"GTA_DATABASE_URL": env.db_url, "DATABASE_URL": sqlalchemy_url(
        env.db_url, ASYNC_DRIVERS if "aiosqlite" in line else SQLALCHEMY_DRIVERS)}
    return re.sub(r"\b(GTA_DATABASE_URL|DATABASE_URL)=\S+", lambda match: f"{match.group(1)}={urls[match.group(1)]}",
                  line)


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_each_recipe_serves_an_order_run_as_its_readme_says(recipe: str, env: Env, shop: Path,
                                                            orders_table: None) -> None:
    dropped = ("GTA_", "DJANGO_", "RECEIPTS_", "PYTHONPATH", "PYTHONSAFEPATH")
    environ = {name: value for name, value in os.environ.items() if not name.startswith(dropped)}
    environ.update(PATH=os.pathsep.join([str(Path(sys.executable).parent), environ.get("PATH", "")]),
                   VIRTUAL_ENV=str(Path(sys.executable).parent.parent),
                   GTA_TABLE=env.table,  # this test's own table (the README's default is gta_tasks)
                   GTA_METRICS="off", GTA_DISABLE_PLUGINS="monitor,cleanup")  # no sidecar port, no periodic rows
    shell = Shell(shop, environ)
    port = free_port()
    lines = readme_lines(recipe)[1:]  # the install line: the test above
    try:
        outputs = [shell.run(swap(line, env, port)) for line in lines[:-1]]
        answer = json.loads(outputs[-1])
        assert set(answer) == {"id"}, answer
        deadline = time.monotonic() + TIMEOUT
        while "receipt" not in (receipts := shell.run(lines[-1]) if (shop / "receipts.txt").exists() else ""):
            assert time.monotonic() < deadline, f"no receipt written\n{shell.logs()}"
            time.sleep(0.2)
        assert receipts == f"receipt for order {answer['id']}\n", receipts
        runtime = env.runtime if not env.db_url.startswith("sqlite") else Runtime(load_settings(
            {"database_url": f"sqlite:///{shop / 'shop.db'}", "table": env.table}))  # the README's relative path
        wait_for(lambda: [task["status"] for task in runtime.store.list_tasks()] == ["succeeded"],
                 what="the receipt task's success")
        refuse = lines[-2].replace('"total": 30', '"total": 0').replace("curl -s ",
                                                                        "curl -s -o /dev/null -w '%{http_code}' ")
        refused = shell.run(swap(refuse, env, port))
        assert refused == "400", refused
        assert sum(runtime.store.counts().values()) == 1  # the refused order's task rolled back with it
        assert runtime.db.execute_sql("SELECT COUNT(*) FROM example_orders").fetchone()[0] == 1
    finally:
        shell.stop()
    for line, _, log in shell.background:
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, f"{line}:\n{text[-4000:]}"
