"""Django settings of the recipe: one database (``GTA_DATABASE_URL``) for the orders and the
tasks, and GTA as the ``django.tasks`` backend.

Run it as examples/README.md says (from the repository root: ``python -m django``, not
``django-admin``, has the working directory, where ``examples`` is, on its path).
"""
from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlparse

import django

ENGINES = {"sqlite": "sqlite3", "postgresql": "postgresql", "mysql": "mysql"}


def database_settings(url: str) -> dict[str, Any]:
    """Django's DATABASES entry for a GTA database URL."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":  # IMMEDIATE: atomic() waits up to 20 s for the write lock at BEGIN (integrations.md)
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": url.split("://", 1)[1][1:],
                "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20}}
    if parsed.scheme == "mysql":
        import pymysql
        pymysql.install_as_MySQLdb()  # Django's MySQL backend on PyMySQL
    return {"ENGINE": f"django.db.backends.{ENGINES[parsed.scheme]}", "NAME": parsed.path.lstrip("/"),
            "USER": parsed.username or "", "PASSWORD": parsed.password or "", "HOST": parsed.hostname or "",
            "PORT": str(parsed.port or "")}


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "recipe-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
# Django 6 has django.tasks; Django 5.2 needs the django-tasks backport's app
INSTALLED_APPS = [*(["django_tasks"] if django.VERSION < (6,) else []), "examples.django.shop"]
ROOT_URLCONF = "examples.django.urls"
DATABASES = {"default": database_settings(os.environ.get("GTA_DATABASE_URL", "sqlite:///shop.db"))}
TASKS = {"default": {"BACKEND": "gta_core.contrib.django.GTABackend", "OPTIONS": {"MAX_ATTEMPTS": 5}}}
