"""Carries a request id from the code that submits a task into the handler's log lines.

An example of GTA's context propagation (``gta_capture_context`` / ``gta_restore_context``)::

    from gta_plugins.request_id import request_id
    request_id.set("req-42")                 # e.g. in your web framework's middleware
    gta_core.submit(tx, "send_email", {...})  # the task row carries {"request_id": "req-42"}

In the worker the id is restored before the handler runs, so ``request_id.get()`` returns
it and every record logged under ``gta.task`` is prefixed with ``[request req-42]``.
"""
from __future__ import annotations

import contextvars
import logging
from typing import Any

from gta_core import hookimpl

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("gta_request_id", default=None)


_installed = False


def _install_record_factory() -> None:
    """Prefix every ``gta.task.*`` record made while a request id is set (logger filters would
    not see the records of child loggers, so this hooks record creation instead)."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        current = request_id.get()
        if current is not None and record.name.startswith("gta.task"):
            record.request_id = current
            record.msg = f"[request {current}] {record.msg}"
        return record

    logging.setLogRecordFactory(factory)
    _installed = True


@hookimpl
def gta_capture_context() -> dict[str, Any] | None:
    current = request_id.get()
    return {"request_id": current} if current is not None else None


@hookimpl
def gta_restore_context(context: dict[str, Any]) -> None:
    _install_record_factory()
    value = context.get("request_id")
    request_id.set(str(value) if value is not None else None)
