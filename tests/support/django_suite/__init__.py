"""Django's own ``tests/tasks`` suite, run against `gta_core.contrib.django.GTABackend` with a
real ``gta-supervisor`` running the tasks (`tests.process.test_django6` fetches the suite from the
pinned Django's source distribution and runs it with ``runtests.py tasks
--settings=tests.support.django_suite.settings``).

Django's test files run as they are shipped. What this package changes, all of it here:

- `settings`: the database (``GTA_DATABASE_URL``: SQLite file or PostgreSQL), GTA as the
  default tasks backend (so the tasks module, which defines an ``async def`` task, imports
  with it), and the test runner below.
- `runner.GTASuiteRunner`: after Django creates the test database, ``gta migrate`` there and
  start ``gta-supervisor --plugin gta_core.contrib.django`` on it; stop it at the end. It
  names ``DummyBackend`` and ``ImmediateBackend`` in ``django.tasks.backends`` as the two
  GTABackend stand-ins of `backends` (the tests select a backend by those names), lets the
  ``SimpleTestCase`` classes use the default database (GTABackend's store), and skips the
  tests listed in `runner.SKIPPED`, each with the dummy- or immediate-backend-only behaviour
  it tests.
- `logs`: the workers' ``django.tasks`` log records (the ``task_started`` /
  ``task_finished`` lines) are sent back to the test process and logged there, where the
  tests' ``assertLogs`` look for them.
"""
