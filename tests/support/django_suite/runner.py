"""The test runner for Django's ``tests/tasks`` against GTABackend (see the package docstring)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from typing import Any
from urllib.parse import quote

import django.tasks.backends.dummy
import django.tasks.backends.immediate
from django.db import connections
from django.test import SimpleTestCase
from django.test.runner import DiscoverRunner
from django.test.utils import iter_test_cases

import gta_core
from gta_core import runtime as runtime_module

from .logs import Receiver
from .skips import SKIPPED

REPO = Path(__file__).resolve().parents[3]
PLUGIN = "gta_core.contrib.django"
_state: dict[str, Any] = {}


def log_receiver() -> Receiver:
    receiver: Receiver = _state["receiver"]
    return receiver


def supervisor_log() -> str:
    return str(_state.get("log_path"))


class GTASuiteRunner(DiscoverRunner):
    """Django's runner, with a real ``gta-supervisor`` on the test database."""

    def setup_test_environment(self, **kwargs: Any) -> None:
        from . import backends
        django.tasks.backends.dummy.DummyBackend = backends.DummyBackend  # type: ignore[misc]
        django.tasks.backends.immediate.ImmediateBackend = backends.ImmediateBackend  # type: ignore[misc]
        super().setup_test_environment(**kwargs)

    def build_suite(self, test_labels: Any = None, **kwargs: Any) -> unittest.TestSuite:
        suite = super().build_suite(test_labels, **kwargs)
        unused, loaded = set(SKIPPED), True
        for test in iter_test_cases(suite):
            loaded = loaded and isinstance(test, SimpleTestCase)  # not unittest's stand-in for a failed import
            cls, name = type(test), test._testMethodName  # type: ignore[attr-defined]
            if isinstance(test, SimpleTestCase) and not cls.databases:  # GTABackend's results are rows
                cls.databases = {"default"}
            reason = SKIPPED.get(f"{cls.__name__}.{name}")
            if reason:
                setattr(cls, name, unittest.skip(reason)(getattr(cls, name)))
                unused.discard(f"{cls.__name__}.{name}")
        if unused and loaded and list(test_labels or []) == ["tasks"]:  # the whole suite: each skip must match
            raise AssertionError(f"skipped tests that Django's suite no longer has: {sorted(unused)}")
        return suite

    def setup_databases(self, **kwargs: Any) -> Any:
        old_config = super().setup_databases(**kwargs)
        url = gta_url(connections["default"].settings_dict)
        os.environ.update(GTA_DATABASE_URL=url, GTA_PLUGINS=PLUGIN)
        runtime_module.reset()
        gta_core.get_runtime().store.migrate()
        receiver = _state["receiver"] = Receiver()
        log_dir = os.environ.get("GTA_SUITE_LOG_DIR") or tempfile.mkdtemp(prefix="gta-django-suite-")
        log_path = _state["log_path"] = Path(log_dir) / "supervisor.log"
        # Django's tests, then ours (the path this process was given, or the checkout)
        pythonpath = os.pathsep.join([os.environ["RUNTESTS_DIR"], os.environ.get("PYTHONPATH") or str(REPO)])
        environ = {**os.environ, "GTA_DATABASE_URL": url, "GTA_PLUGINS": PLUGIN, "GTA_METRICS": "off",
                   "GTA_DISABLE_PLUGINS": "monitor,cleanup", "GTA_SUITE_LOG_PORT": str(receiver.port),
                   "DJANGO_SETTINGS_MODULE": "tests.support.django_suite.settings", "PYTHONPATH": pythonpath}
        with open(log_path, "wb") as log:
            _state["supervisor"] = subprocess.Popen(
                [sys.executable, "-m", "gta_core.cli_supervisor", "--workers", "1", "--threads", "4"],
                stdout=log, stderr=subprocess.STDOUT, env=environ, start_new_session=True)
        return old_config

    def teardown_databases(self, old_config: Any, **kwargs: Any) -> None:
        supervisor: subprocess.Popen[bytes] | None = _state.pop("supervisor", None)
        if supervisor is not None:
            supervisor.send_signal(signal.SIGTERM)
            try:
                supervisor.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(supervisor.pid, signal.SIGKILL)
                supervisor.wait()
        if "receiver" in _state:
            _state.pop("receiver").close()
        runtime_module.reset()
        super().teardown_databases(old_config, **kwargs)


def gta_url(settings_dict: dict[str, Any]) -> str:
    """The GTA database URL of a Django database (the test database, once Django made it)."""
    name = settings_dict["NAME"]
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{name}"
    scheme = "postgresql" if "postgresql" in settings_dict["ENGINE"] else "mysql"
    user = quote(settings_dict["USER"] or "")
    password = f":{quote(settings_dict['PASSWORD'])}" if settings_dict["PASSWORD"] else ""
    port = f":{settings_dict['PORT']}" if settings_dict["PORT"] else ""
    return f"{scheme}://{user}{password}@{settings_dict['HOST']}{port}/{name}"
