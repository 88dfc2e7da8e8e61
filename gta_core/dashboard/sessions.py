"""Signed-in browsers: sessions kept by the sidecar, and the CSRF values of their forms.

A session begins with a sign-in and ends at sign-out, after ``idle`` seconds unused, or
``max_age`` seconds after it began, whichever comes first. The cookie carries only its random
id. Each page rendered for a session gets a CSRF value, ``nonce.HMAC(key, session id:nonce)``:
it is refused for any other session or after its session ended, and it serves one action
(the next page brings a fresh one). An action leaves a flash message in its session, which
the next page shows once. Sessions live in the sidecar's memory, so a restarted
sidecar asks everyone to sign in again; the key is random per process for the same reason.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable

LIMIT = 1000  # sessions kept; signing in beyond ends the one unused longest
SPENT_LIMIT = 10_000  # actions per session before it must sign in again (the spent nonces are kept)


@dataclasses.dataclass
class _Session:
    began: float
    last_used: float
    spent: set[str] = dataclasses.field(default_factory=set)  # the nonces of used CSRF values
    flash: str | None = None  # what the next page shows once (the outcome of the last action)


class Sessions:
    def __init__(self, idle: float, max_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle = idle
        self.max_age = max_age
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}

    def begin(self) -> str:
        """A new session's id."""
        session_id = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            if len(self._sessions) >= LIMIT:
                del self._sessions[min(self._sessions, key=lambda known: self._sessions[known].last_used)]
            self._sessions[session_id] = _Session(now, now)
        return session_id

    def live(self, session_id: str, touch: bool = True) -> bool:
        """Whether the session exists and has not expired; using it (``touch``) restarts its
        idle time. A page's live updates do not touch it: an unattended open page must not keep
        its browser signed in."""
        now = self._clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return False
            if now - session.last_used > self.idle or now - session.began > self.max_age:
                del self._sessions[session_id]
                return False
            if touch:
                session.last_used = now
            return True

    def flash(self, session_id: str, message: str) -> None:
        """Show ``message`` on the next page this session opens, and only there."""
        with self._lock:
            if (session := self._sessions.get(session_id)) is not None:
                session.flash = message

    def take_flash(self, session_id: str) -> str | None:
        """The message waiting for this session, now taken (a reload does not show it again)."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            message, session.flash = session.flash, None
            return message

    def end(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def form_value(self, session_id: str) -> str:
        """A fresh CSRF value for a page rendered for this session."""
        nonce = secrets.token_urlsafe(12)
        return f"{nonce}.{self._mac(session_id, nonce)}"

    def spend(self, session_id: str, value: str) -> bool:
        """Whether ``value`` is a CSRF value of this live session not used before; it is used now."""
        nonce, _, mac = value.partition(".")
        if not nonce or not hmac.compare_digest(mac.encode(), self._mac(session_id, nonce).encode()):
            return False
        if not self.live(session_id):
            return False
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or nonce in session.spent:
                return False
            if len(session.spent) >= SPENT_LIMIT:
                del self._sessions[session_id]
                return False
            session.spent.add(nonce)
            return True

    def _mac(self, session_id: str, nonce: str) -> str:
        return hmac.new(self._key, f"csrf:{session_id}:{nonce}".encode(), hashlib.sha256).hexdigest()
