"""Settings for Django's ``runtests.py tasks`` against GTABackend, and for the workers running
those tasks (the same module, as a Django shop's web and worker processes share theirs).

``GTA_DATABASE_URL`` is the database (SQLite or PostgreSQL): in the test process the one Django
makes its test database beside (``GTA_SUITE_TEST_NAME`` names it), in the workers that test
database itself.
"""
from __future__ import annotations

import os
from urllib.parse import unquote, urlparse

URL = urlparse(os.environ["GTA_DATABASE_URL"])
SECRET_KEY = "django_tests_secret_key"
USE_TZ = False  # as Django's own test settings; tests that need time zones override it
if URL.scheme == "sqlite":
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": URL.path}}
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": URL.path.lstrip("/"),
                             "USER": unquote(URL.username or ""), "PASSWORD": unquote(URL.password or ""),
                             "HOST": URL.hostname or "", "PORT": str(URL.port or "")}}
DATABASES["default"]["TEST"] = {"NAME": os.environ.get("GTA_SUITE_TEST_NAME")}
_GTA = {"BACKEND": "gta_core.contrib.django.GTABackend", "QUEUES": []}
# the aliases Django's tests enqueue on; the workers rebuild each task with its alias
TASKS = {"default": _GTA, "immediate": _GTA}
TEST_RUNNER = "tests.support.django_suite.runner.GTASuiteRunner"

if os.environ.get("GTA_SUITE_LOG_PORT"):  # a worker: its django.tasks lines go to the test process
    LOGGING = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"suite": {"()": "tests.support.django_suite.logs.SendToSuite",
                               "port": os.environ["GTA_SUITE_LOG_PORT"]}},
        "loggers": {"django.tasks": {"handlers": ["suite"], "level": "DEBUG", "propagate": False}},
    }
