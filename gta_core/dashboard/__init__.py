"""The web dashboard, served by the metrics sidecar at ``/`` (see docs/dashboard.md).

`mount` builds it for a sidecar; `serve` answers one request of the sidecar's HTTP server
(`gta_core.metrics.server`, which bounds connections, requests and responses) with it.
Modules: `access` (token, origin), `sessions` (sign-ins, their CSRF values and flash
messages), `throttle` (wrong tokens per client), `inputs` (checked request values), `queries`
(bounded reads), `history` (the last 24 hours, recorded by the sidecar), `render`, `pages` and
`charts` (escaped HTML), one module per page (`overview`, `queue_pages`, `worker_page`,
`task_pages`, `workflow_page`), `live` (live updates), `app` (routes), `actions` (POST) and
`operator` (the writes, recorded as the dashboard's), `local` (what the sidecar knows of its
supervisor).
"""
from __future__ import annotations

import functools
import logging
from typing import Any
from urllib.parse import parse_qsl

from ..config import Settings
from ..metrics import catalog, server
from ..metrics.multiproc import MultiprocDir
from .access import prepare, refusal
from .app import Dashboard, Request
from .local import read_local

log = logging.getLogger("gta.dashboard")

__all__ = ["Dashboard", "mount", "prepare", "serve"]


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
