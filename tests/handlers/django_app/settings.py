"""Django settings for the tests: the Django recipe's (`examples.django.settings`: the
database of ``GTA_DATABASE_URL`` as the default alias, GTA as the tasks backend, the shop
app), with fewer attempts so a failing task fails fast, a second queue, and a second tasks
backend writing through a second alias of the same database."""
from __future__ import annotations

import os

from examples.django.settings import (  # noqa: F401  # the settings Django reads from this module
    ALLOWED_HOSTS,
    DATABASES,
    DEFAULT_AUTO_FIELD,
    INSTALLED_APPS,
    ROOT_URLCONF,
    SECRET_KEY,
    USE_TZ,
    database_settings,
)

DATABASES = {**DATABASES, "second": database_settings(os.environ.get("GTA_DATABASE_URL", "sqlite:///shop.db"))}
if os.environ.get("GTA_TEST_PERSISTENT_CONNECTIONS"):  # a worker keeping its connection between tasks
    DATABASES["default"] = {**DATABASES["default"], "CONN_MAX_AGE": None, "CONN_HEALTH_CHECKS": True}
TASKS = {
    "default": {"BACKEND": "gta_core.contrib.django.GTABackend", "QUEUES": ["default", "mail"],
                "OPTIONS": {"MAX_ATTEMPTS": 2}},
    "second": {"BACKEND": "gta_core.contrib.django.GTABackend", "QUEUES": ["default", "mail"],
               "OPTIONS": {"DATABASE": "second", "MAX_ATTEMPTS": 2}},
}
