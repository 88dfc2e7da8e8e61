"""The dashboard as the metrics sidecar mounts and serves it (see the package's doc)."""
from __future__ import annotations

import functools
import logging
from typing import Any
from urllib.parse import parse_qsl

from ..config import Settings
from ..metrics import catalog, server
from ..metrics.multiproc import MultiprocDir
from .access import refusal
from .app import Dashboard, Request
from .local import read_local

log = logging.getLogger("gta.dashboard")

__all__ = ["mount", "serve"]


def mount(settings: Settings, directory: MultiprocDir, supervisor_pid: int, collector: Any) -> Dashboard | None:
    """The sidecar's dashboard, or None when it is off or must not be served (see `refusal`)."""
    if not settings.dashboard:
        return None
    if reason := refusal(settings):
        log.error("dashboard not served: %s", reason)
        return None
    local = functools.partial(read_local, directory, supervisor_pid, collector)
    dashboard = Dashboard(settings, local, functools.partial(catalog.read, directory.path))
    dashboard.history.start()
    return dashboard


def serve(request: server.Request, dashboard: Dashboard) -> server.Reply:
    """Answer one request of the sidecar's server (every path but ``/metrics`` and ``/healthz``)."""
    query = dict(parse_qsl(request.query))
    return dashboard.handle(Request(request.method, request.path, query, request.headers, request.client,
                                    request.read_body))
