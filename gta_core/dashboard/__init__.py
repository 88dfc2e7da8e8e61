"""The web dashboard, served by the metrics sidecar at ``/`` (see docs/dashboard.md).

`mount` builds it for a sidecar; `serve` answers one request of the sidecar's
``BaseHTTPRequestHandler`` with it. Modules: `access` (token, session, CSRF), `queries`
(bounded reads), `pages` and `render` (escaped HTML), `app` (routes and actions), `local`
(what the sidecar knows of its supervisor).
"""
from __future__ import annotations

import functools
import logging
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..config import Settings
from ..metrics.multiproc import MultiprocDir
from .access import prepare, refusal
from .app import FORM_LIMIT, Dashboard, Request, Response, parse_form
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
    return Dashboard(settings, local)


def serve(handler: BaseHTTPRequestHandler, dashboard: Dashboard) -> None:
    """Answer ``handler``'s request (GET or POST) with the dashboard."""
    url = urlsplit(handler.path)
    form: dict[str, str] = {}
    if handler.command == "POST":
        length = int(handler.headers.get("Content-Length") or 0)
        if length > FORM_LIMIT:
            _send(handler, Response(413, b"form too large\n", "text/plain; charset=utf-8"))
            return
        form = parse_form(handler.rfile.read(length))
    headers = {name.title(): value for name, value in handler.headers.items()}  # Sec-Fetch-Site, Origin, …
    request = Request(handler.command, url.path, dict(parse_qsl(url.query)), headers, form)
    _send(handler, dashboard.handle(request))


def _send(handler: BaseHTTPRequestHandler, response: Response) -> None:
    handler.send_response(response.status)
    handler.send_header("Content-Type", response.content_type)
    handler.send_header("Content-Length", str(len(response.body)))
    for name, value in response.headers:
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(response.body)
