"""Who may act on the dashboard: the token, the session cookie and the CSRF check.

Reading is open to whoever reaches the sidecar's port (loopback by default) under a name it
answers to (`gta_core.metrics.hosts`). Acting (retry, cancel, purge) needs all three of:

- a session cookie set by signing in with the dashboard token (`sessions`: a random id, never
  the token; ``HttpOnly``, ``SameSite=Strict``), for a session that has not expired or been
  signed out; sign-ins are throttled per client (`throttle`);
- a CSRF value bound to that session (`sessions`), good for one action: only a page rendered
  for the signed-in browser carries one, and another site can neither read it nor forge it;
- a request that says it comes from this origin: ``Sec-Fetch-Site`` (when sent) is
  ``same-origin`` or ``none``, and ``Origin`` (when sent) names the ``Host`` it was sent to.

The first and last are checked before the request's body is read. With no token configured
nothing can act: the dashboard is read-only.
"""
from __future__ import annotations

import hmac
import ipaddress
import secrets
import sys
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie
from typing import TextIO
from urllib.parse import urlsplit

from ..config import Settings
from ..errors import ConfigError
from .sessions import Sessions

COOKIE = "gta_dashboard"
#: no inline script, no third party, no framing: escaping is the first defence, this the second
SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
)

GENERATE = "generate"


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def prepare(settings: Settings, out: TextIO = sys.stderr) -> Settings:
    """The supervisor's settings at start: refuse a dashboard open to the network without a
    token, and turn ``--dashboard-token generate`` into a random token, printed once."""
    if not (settings.metrics and settings.dashboard):
        return settings
    if reason := refusal(settings):
        raise ConfigError("dashboard_token", reason)
    if settings.dashboard_token == GENERATE:
        settings = settings.replace(dashboard_token=secrets.token_urlsafe(24))
        print(f"gta-supervisor: dashboard token for this run: {settings.dashboard_token}", file=out, flush=True)
    return settings


def refusal(settings: Settings) -> str | None:
    """Why the dashboard must not be served with these settings, or None."""
    if settings.dashboard_token or is_loopback(settings.metrics_bind.rpartition(":")[0]):
        return None
    return (f"the dashboard would be served on {settings.metrics_bind}, beyond this host, without a token: "
            "set --dashboard-token (or GTA_DASHBOARD_TOKEN), bind the sidecar to 127.0.0.1, "
            "or turn the dashboard off with --no-dashboard")


class Guard:
    """The token, the sessions it opens and their CSRF values ('' token: read-only, every check fails)."""

    def __init__(self, token: str, sessions: Sessions) -> None:
        self._key = token.encode() if token and token != GENERATE else b""
        self.sessions = sessions

    @property
    def enabled(self) -> bool:
        return bool(self._key)

    def token_matches(self, candidate: str) -> bool:
        return self.enabled and hmac.compare_digest(candidate.encode(), self._key)

    def sign_in(self) -> str:
        """The ``Set-Cookie`` value a correct sign-in gets: a new session's id."""
        return (f"{COOKIE}={self.sessions.begin()}; Path=/; HttpOnly; SameSite=Strict; "
                f"Max-Age={int(self.sessions.max_age)}")

    def sign_out(self, session: str) -> str:
        """End ``session``; the ``Set-Cookie`` value that removes its cookie."""
        self.sessions.end(session)
        return f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"

    def session(self, cookie_header: str | None, touch: bool = True) -> str | None:
        """The live session the request's cookie names, or None (``touch``: see `Sessions.live`)."""
        if not self.enabled or not cookie_header:
            return None
        try:
            cookies = SimpleCookie(cookie_header)
        except CookieError:
            return None
        morsel = cookies.get(COOKIE)
        return morsel.value if morsel is not None and self.sessions.live(morsel.value, touch) else None

    def form_value(self, session: str) -> str:
        """A fresh CSRF value for a page rendered for ``session``."""
        return self.sessions.form_value(session)

    def spend_form_value(self, session: str, value: str) -> bool:
        """Whether ``value`` is an unused CSRF value of ``session``; it is used now."""
        return self.enabled and self.sessions.spend(session, value)


def same_origin(headers: Mapping[str, str]) -> bool:
    """False when the browser says the request comes from another site."""
    fetch_site = headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    origin = headers.get("Origin")
    if origin is None:
        return True
    return origin != "null" and urlsplit(origin).netloc == headers.get("Host", "")
