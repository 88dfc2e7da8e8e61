"""Live updates: ``GET /live/<page path>?<its query>`` answers the page's parts as JSON.

A page's script (``static/live.js``) asks every `EVERY_MS` while the tab is visible and
replaces each part whose HTML changed. The parts are rendered by the same code as the page
(`Dashboard.screen`), so an update shows what a reload would, escaped the same way. The
script sends the digest of each part it holds (``X-GTA-Parts: name=digest,…``); a part
whose digest is unchanged is left out of the answer, so an idle page costs its queries and a
few hundred bytes. A digest ignores the page's CSRF value, which is fresh in every render.

Plain polling, not Server-Sent Events: the sidecar's server holds one thread per connection
and at most 32 connections (`metrics.server`), which open event streams would pin; and
completions send no ``NOTIFY`` that a stream could wait on. What an update costs is each
page's live queries, listed in docs/dashboard.md; none of them grows with the table.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..metrics.server import Reply as Response
from .access import SECURITY_HEADERS
from .pages import Viewer, digest

if TYPE_CHECKING:
    from .app import Dashboard, Request

EVERY_MS = 3000
HEADER = "X-Gta-Parts"
_KNOWN_LIMIT = 64  # parts a request may name


def known(headers: Mapping[str, str]) -> dict[str, str]:
    """The digests the script holds, by part name."""
    pairs = (item.partition("=") for item in headers.get(HEADER, "").split(",")[:_KNOWN_LIMIT])
    return {name.strip(): value.strip() for name, _, value in pairs if name.strip()}


def reply(dashboard: Dashboard, request: Request, viewer: Viewer) -> Response:
    path = request.path[len("/live"):].rstrip("/") or "/"
    screen = dashboard.screen(path, request.query, viewer, full=False)
    if screen is None:
        body = json.dumps({"error": "no such page"}).encode()
        return Response(404, body, "application/json", list(SECURITY_HEADERS))
    held = known(request.headers)
    digests = {name: digest(html, viewer) for name, html in screen.parts.items()}
    parts = {name: str(html) for name, html in screen.parts.items() if held.get(name) != digests[name]}
    body = json.dumps({"parts": parts, "digests": digests, "every": EVERY_MS}).encode()
    return Response(200, body, "application/json", list(SECURITY_HEADERS))
