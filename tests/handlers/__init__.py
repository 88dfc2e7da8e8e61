"""The handler plugins the suite's supervisors and this process load by name (``--plugin
tests.handlers.tasks``, ``GTA_PLUGINS``): `tasks` (the ledger every handler writes), the
per-feature ones, probes of the built-ins, `plugins_bad` (wrong on purpose), `django_app` (a
Django project's tasks) and `example_pkg` (an installable plugin, found by its entry point)."""
