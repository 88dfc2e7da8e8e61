"""The databases the suite runs against: SQLite always; PostgreSQL and MariaDB/MySQL when
``GTA_TEST_POSTGRES_URL`` / ``GTA_TEST_MYSQL_URL`` are set (tests/conftest.py's ``backend``
fixture runs each test on every one of them)."""
from __future__ import annotations

import os

import pytest

BACKENDS = {
    "sqlite": None,
    "postgres": os.environ.get("GTA_TEST_POSTGRES_URL"),
    "mariadb": os.environ.get("GTA_TEST_MYSQL_URL"),
}
ENABLED = [name for name, url in BACKENDS.items() if name == "sqlite" or url]
NOT_RUN = {  # why a server backend's tests did not run, and what to do about it
    "postgres": "PostgreSQL tests not run: set GTA_TEST_POSTGRES_URL=postgresql://USER@HOST:5432/DB",
    "mariadb": "MariaDB/MySQL tests not run: set GTA_TEST_MYSQL_URL=mysql://USER@HOST:3306/DB",
}


def only_on(backend: str) -> object:
    """``pytest.param(backend)``, skipped with what to set when that backend is not configured."""
    return pytest.param(backend, marks=pytest.mark.skipif(not BACKENDS[backend], reason=NOT_RUN[backend]))
