"""Django's tasks API for the tests: ``django.tasks`` on Django 6, the ``django-tasks`` backport
on Django 5.2 (Python < 3.12)."""
from __future__ import annotations

try:
    from django.tasks import TaskResultStatus, task, task_backends
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_finished, task_started
except ImportError:
    from django_tasks import TaskResultStatus, task, task_backends  # type: ignore[no-redef]
    from django_tasks.exceptions import (  # type: ignore[no-redef]
        InvalidTaskError as InvalidTask,
    )
    from django_tasks.exceptions import TaskResultDoesNotExist  # type: ignore[no-redef]
    from django_tasks.signals import task_finished, task_started  # type: ignore[no-redef]

__all__ = ["InvalidTask", "TaskResultDoesNotExist", "TaskResultStatus", "task", "task_backends", "task_finished",
           "task_started"]
