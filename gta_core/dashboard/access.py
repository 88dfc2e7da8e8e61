"""Who may act on the dashboard: the token, the session cookie and the CSRF check.

Reading is open to whoever reaches the sidecar's port (loopback by default). Acting (retry,
cancel, purge) needs all three of:

- a session cookie set by signing in with the dashboard token (the cookie holds an HMAC of
  the token, never the token; ``HttpOnly``, ``SameSite=Strict``);
- a per-form CSRF value, ``nonce.HMAC(token, nonce)``: only a page rendered for a signed-in
  browser carries one, and another site can neither read it nor forge it;
- a request that says it comes from this origin: ``Sec-Fetch-Site`` (when sent) is
  ``same-origin`` or ``none``, and ``Origin`` (when sent) names the ``Host`` it was sent to.

With no token configured nothing can act: the dashboard is read-only.
"""
from __future__ import annotations

import hashlib
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

COOKIE = "gta_dashboard"
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
    """The checks above for one token ('' means read-only: every check fails)."""

    def __init__(self, token: str) -> None:
        self._key = token.encode() if token and token != GENERATE else b""

    @property
    def enabled(self) -> bool:
        return bool(self._key)

    def _mac(self, purpose: str, value: str = "") -> str:
        return hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

    def token_matches(self, candidate: str) -> bool:
        return self.enabled and hmac.compare_digest(candidate.encode(), self._key)

    def session_cookie(self) -> str:
        """The ``Set-Cookie`` value a correct sign-in gets."""
        return f"{COOKIE}={self._mac('session')}; Path=/; HttpOnly; SameSite=Strict"

    @staticmethod
    def signed_out_cookie() -> str:
        return f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"

    def signed_in(self, cookie_header: str | None) -> bool:
        if not self.enabled or not cookie_header:
            return False
        try:
            cookies = SimpleCookie(cookie_header)
        except CookieError:
            return False
        morsel = cookies.get(COOKIE)
        return morsel is not None and hmac.compare_digest(morsel.value.encode(), self._mac("session").encode())

    def form_value(self) -> str:
        """A fresh CSRF value for one form."""
        nonce = secrets.token_urlsafe(12)
        return f"{nonce}.{self._mac('csrf', nonce)}"

    def form_value_ok(self, value: str) -> bool:
        nonce, _, mac = value.partition(".")
        return self.enabled and bool(nonce) and hmac.compare_digest(mac.encode(), self._mac("csrf", nonce).encode())


def same_origin(headers: Mapping[str, str]) -> bool:
    """False when the browser says the request comes from another site."""
    fetch_site = headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    origin = headers.get("Origin")
    if origin is None:
        return True
    return origin != "null" and urlsplit(origin).netloc == headers.get("Host", "")
