"""Django settings for the tests: the Django recipe's (`examples.django.settings`: the
database of ``GTA_DATABASE_URL`` as the default alias, GTA as the tasks backend, the shop
app), with fewer attempts so a failing task fails fast."""
from __future__ import annotations

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

TASKS = {"default": {"BACKEND": "gta_core.contrib.django.GTABackend", "OPTIONS": {"MAX_ATTEMPTS": 2}}}
