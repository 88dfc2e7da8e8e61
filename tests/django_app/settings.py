"""Django settings for the tests: the database of ``GTA_DATABASE_URL`` as the default alias
(worker processes a test's supervisor starts read it from their environment), and GTA as
the tasks backend."""
from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlparse

ENGINES = {"sqlite": "sqlite3", "postgresql": "postgresql", "mysql": "mysql"}


def database_settings(url: str) -> dict[str, Any]:
    """Django's DATABASES entry for a GTA database URL."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": url.split("://", 1)[1][1:]}
    if parsed.scheme == "mysql":
        import pymysql
        pymysql.install_as_MySQLdb()  # Django's MySQL backend on PyMySQL
    return {"ENGINE": f"django.db.backends.{ENGINES[parsed.scheme]}", "NAME": parsed.path.lstrip("/"),
            "USER": parsed.username or "", "PASSWORD": parsed.password or "", "HOST": parsed.hostname or "",
            "PORT": str(parsed.port or "")}


SECRET_KEY = "tests"
USE_TZ = True
INSTALLED_APPS = ["django_tasks"]
DATABASES = {"default": database_settings(os.environ.get("GTA_DATABASE_URL", "sqlite:///:memory:"))}
TASKS = {"default": {"BACKEND": "gta_core.contrib.django.GTABackend", "OPTIONS": {"MAX_ATTEMPTS": 2}}}
