"""Django handles: ``django.db.connection`` or ``connections[alias]``, inside
``transaction.atomic()`` (or with autocommit turned off), written through that connection.

Outside ``atomic()`` Django commits every statement at once, so a submit there is refused:
the task could not share the fate of the view's writes (and would silently commit alone).
A rolled-back inner ``atomic()`` (a savepoint) takes its tasks with it; the wake-up is a
``transaction.on_commit`` callback, which Django runs after the outermost commit only.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import connections, transaction

from ..errors import SubmitError
from ..runtime import Runtime
from . import KINDS
from .connection import ConnectionHandle

DIALECTS = {"sqlite": "sqlite", "postgresql": "postgres", "mysql": "mysql"}


def adapt(handle: Any, runtime: Runtime) -> ConnectionHandle:
    alias = getattr(handle, "alias", None)  # the ConnectionProxy `django.db.connection` passes it on
    if not isinstance(alias, str) or alias not in connections:
        raise SubmitError(f"db_tx must be {KINDS}; got {type(handle).__name__}")
    wrapper = connections[alias]
    kind = f"Django connection {alias!r}"
    reason = None
    if wrapper.get_autocommit():
        reason = (f"the {kind} is not inside transaction.atomic(using={alias!r}), where Django commits every "
                  "statement at once: submit inside atomic(), or on GTA's own connection")
    wrapper.ensure_connection()

    def on_commit(fn: Callable[[], None]) -> None:
        transaction.on_commit(fn, using=alias)
    immediate = (f"DATABASES[{alias!r}]['OPTIONS']['transaction_mode'] = 'IMMEDIATE' in your settings "
                 "(Django 5.1 and later)")
    return ConnectionHandle(kind, DIALECTS.get(wrapper.vendor, wrapper.vendor), wrapper.connection, reason,
                            on_commit, immediate)
