"""The sidecar's HTTP server: the protections every route gets without asking, so that a page
added later is as safe as today's.

- **Connections.** At most `MAX_CONNECTIONS` at once, a thread each. A client has
  `REQUEST_TIMEOUT` to send its request head, and as long again for its body; a socket read
  or write that makes no progress for `IO_TIMEOUT` ends the connection. At the cap, the
  connection that has waited longest for its client is closed to make room, so idle or
  trickling connections cannot starve ``/metrics`` and ``/healthz``; when every connection
  is busy being answered, a newcomer gets 503 at once. An ``accept`` that fails for want of
  file descriptors pauses the loop instead of spinning on it.
- **Requests.** A head of at most 64 KiB of request line and `HEAD_LIMIT` of headers (else
  414 or 431); a ``Host`` this sidecar answers to (`hosts.AllowedHosts`, else 400); a body
  only with a valid ``Content-Length`` of at most `MAX_BODY` bytes (else 400, 411 or 413),
  read when the route asks for it, after its own access checks.
- **Responses** are written in one place, `RequestHandler.respond`, which refuses a header
  whose name or value holds a control character (CR, LF, …) or a character beyond Latin-1:
  that response becomes a plain 500. A route refuses bad input with `HttpError` (a status and
  a short message); any other exception is logged with its traceback and answered 500
  without its text.
"""
from __future__ import annotations

import dataclasses
import errno
import http.client
import io
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from .hosts import AllowedHosts

log = logging.getLogger("gta.metrics")

MAX_CONNECTIONS = 32
REQUEST_TIMEOUT = 10.0  # seconds a client has to send its request head, and again its body
IO_TIMEOUT = 10.0  # seconds a socket read or write may make no progress
HEAD_LIMIT = 32 * 1024  # bytes of header lines
MAX_BODY = 64 * 1024
ACCEPT_PAUSE = 0.1  # after an accept failed for want of file descriptors
WARN_EVERY = 60.0  # seconds between two warnings about the same pressure
REFUSED_HOSTS_LOGGED = 100
_BUSY_TEXT = b"busy: every connection is in use, try again\n"
#: written straight to a connection refused at the cap (no thread serves it): fixed bytes
BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_BUSY_TEXT), _BUSY_TEXT))
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\xa0-\xff]*")


@dataclasses.dataclass(frozen=True)
class Request:
    """One request as a route sees it: the body is read only if the route calls `read_body`."""

    method: str
    path: str
    query: str  # as sent, still percent-encoded
    headers: Mapping[str, str]  # names in Title-Case
    client: str  # the peer's address
    body_length: int
    read_body: Callable[[], bytes]


@dataclasses.dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def text_reply(status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> Reply:
    """A short plain-text answer."""
    return Reply(status, (message + "\n").encode(), headers=[("X-Content-Type-Options", "nosniff"),
                                                             ("Cache-Control", "no-store"), *headers])


class HttpError(Exception):
    """A request refused with ``status`` and a short message for the client."""

    def __init__(self, status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.headers = list(headers)

    def reply(self) -> Reply:
        return text_reply(self.status, str(self), self.headers)


App = Callable[[Request], Reply]
INTERNAL_ERROR = "internal error: see the sidecar's log"


def header_ok(name: str, value: str) -> bool:
    """A header that cannot end the head early or break its encoding: a token for a name, and
    a value of tabs, spaces, visible ASCII and Latin-1 letters."""
    return _TOKEN.fullmatch(name) is not None and _FIELD_VALUE.fullmatch(value) is not None


def _hang_up(connection: socket.socket) -> None:
    """End a connection another thread is serving: its blocked read returns at once, and that
    thread closes the socket (closing it here could close a descriptor reused meanwhile)."""
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class Connections:
    """The open connections, each waiting for its client (since a moment) or busy being answered."""

    def __init__(self, limit: int, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._waiting_since: dict[socket.socket, float | None] = {}  # None: busy
        self._warned: dict[str, float] = {}

    def admit(self, connection: socket.socket) -> bool:
        """Take a new connection; at the cap, close the one that has waited longest for its
        client first. False (not taken) when every connection is busy."""
        with self._lock:
            if len(self._waiting_since) >= self.limit:
                waiting = [(since, other) for other, since in self._waiting_since.items() if since is not None]
                if not waiting:
                    self.warn("busy", "all %d connections are busy: answering new ones 503", self.limit)
                    return False
                oldest = min(waiting, key=lambda pair: pair[0])[1]
                del self._waiting_since[oldest]
                _hang_up(oldest)
                self.warn("full", "%d connections open: closing the one idle longest for each new one",
                          self.limit)
            self._waiting_since[connection] = self._clock()
            return True

    def waiting(self, connection: socket.socket) -> None:
        with self._lock:
            if connection in self._waiting_since:
                self._waiting_since[connection] = self._clock()

    def busy(self, connection: socket.socket) -> None:
        with self._lock:
            if connection in self._waiting_since:
                self._waiting_since[connection] = None

    def remove(self, connection: socket.socket) -> None:
        with self._lock:
            self._waiting_since.pop(connection, None)

    def close_overdue(self) -> None:
        """Close every connection that has waited longer than ``timeout`` for its client."""
        deadline = self._clock() - self.timeout
        with self._lock:
            overdue = [connection for connection, since in self._waiting_since.items()
                       if since is not None and since < deadline]
            for connection in overdue:
                del self._waiting_since[connection]
                _hang_up(connection)

    def warn(self, kind: str, message: str, *args: Any) -> None:
        """A warning, at most once per `WARN_EVERY` seconds for each ``kind`` of pressure."""
        now = self._clock()
        if now - self._warned.get(kind, -WARN_EVERY) >= WARN_EVERY:
            self._warned[kind] = now
            log.warning("metrics sidecar: " + message, *args)


class _HeadLimit(io.BufferedIOBase):
    """A connection's input that refuses a header section over `HEAD_LIMIT` bytes while
    ``budget`` is set (http.client alone allows 100 header lines of 64 KiB each)."""

    def __init__(self, raw: io.BufferedIOBase) -> None:
        super().__init__()
        self.raw_input = raw
        self.budget: int | None = None

    def readline(self, size: int | None = -1) -> bytes:
        line = self.raw_input.readline(-1 if size is None else size)
        if self.budget is not None:
            self.budget -= len(line)
            if self.budget < 0:
                raise http.client.LineTooLong(f"header section over {HEAD_LIMIT} bytes")
        return line

    def read(self, size: int | None = -1) -> bytes:
        return self.raw_input.read(-1 if size is None else size)

    def close(self) -> None:
        self.raw_input.close()
        super().close()


class RequestHandler(BaseHTTPRequestHandler):
    """One connection, one request (HTTP/1.0: no keep-alive), answered by the server's app."""

    server: Server

    def version_string(self) -> str:
        return "gta"  # the Server header: no Python version for a scanner to match

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.io_timeout)
        self._head = _HeadLimit(self.rfile)
        self.rfile = self._head
        self._body: bytes | None = None

    def parse_request(self) -> bool:
        self._head.budget = HEAD_LIMIT
        parsed = super().parse_request()
        self._head.budget = None
        self.server.connections.busy(self.connection)
        return parsed

    def do_GET(self) -> None:
        try:
            reply = self.server.app(self._request())
        except HttpError as exc:
            reply = exc.reply()
        except Exception:
            log.exception("%s %r failed", self.command, self.path[:200])
            reply = text_reply(500, INTERNAL_ERROR)
        self.respond(reply)

    do_POST = do_GET

    def _request(self) -> Request:
        target = self.path
        if target.startswith("/"):
            path, _, query = target.partition("?")
        else:  # absolute form, as sent to proxies: its host must be one of ours too
            parts = urlsplit(target)
            if not self.server.hosts.allows(parts.netloc or "."):
                raise self.server.refuse_host(parts.netloc)
            path, query = parts.path or "/", parts.query
        host = self.headers.get("Host")
        if not self.server.hosts.allows(host):
            raise self.server.refuse_host(host or "")
        length = self._body_length()
        headers = {name.title(): value for name, value in self.headers.items()}
        return Request(self.command, path, query, headers, self.client_address[0], length,
                       lambda: self._read_body(length))

    def _body_length(self) -> int:
        if "Transfer-Encoding" in self.headers:
            raise HttpError(411, "send the request body with a Content-Length (chunked bodies are not accepted)")
        values = {value.strip() for value in self.headers.get_all("Content-Length", [])}
        if not values:
            if self.command == "POST":
                raise HttpError(411, "a POST needs a Content-Length")
            return 0
        text = values.pop()
        if values or not (text.isascii() and text.isdigit()):
            raise HttpError(400, "Content-Length must be one number of bytes")
        if len(text) > 9 or int(text) > MAX_BODY:
            raise HttpError(413, f"request body over {MAX_BODY // 1024} KiB")
        return int(text)

    def _read_body(self, length: int) -> bytes:
        if self._body is None:
            self.server.connections.waiting(self.connection)
            try:
                self._body = self.rfile.read(length)
            except OSError:
                raise HttpError(408, "the request body did not arrive in time") from None
            self.server.connections.busy(self.connection)
            if len(self._body) < length:
                raise HttpError(400, "the request body is shorter than its Content-Length")
        return self._body

    def respond(self, reply: Reply) -> None:
        """Write ``reply``: the one place a response is written (see the module's docstring)."""
        headers = _all_headers(reply)
        bad = next((name for name, value in headers if not header_ok(name, value)), None)
        if bad is not None:
            log.error("a response to %s %r had a malformed %r header (a control character or a character "
                      "beyond Latin-1): answered 500 instead", self.command, self.path[:200], bad[:100])
            headers = _all_headers(reply := text_reply(500, INTERNAL_ERROR))
        self.send_response(reply.status)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a malformed request line, too long a head, an unknown
        method) through `respond`, with the status's phrase only: its message may quote the request."""
        self.close_connection = True
        self.respond(text_reply(code, HTTPStatus(code).phrase))

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


def _all_headers(reply: Reply) -> list[tuple[str, str]]:
    return [("Content-Type", reply.content_type), ("Content-Length", str(len(reply.body))), *reply.headers]


class Server(ThreadingHTTPServer):
    """Serves ``app`` on a socket the supervisor bound and listens on already."""

    daemon_threads = True

    def __init__(self, listener: socket.socket, app: App, hosts: AllowedHosts, limit: int = MAX_CONNECTIONS,
                 request_timeout: float = REQUEST_TIMEOUT, io_timeout: float = IO_TIMEOUT) -> None:
        self.address_family = listener.family
        super().__init__(listener.getsockname(), RequestHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = listener
        self.app = app
        self.hosts = hosts
        self.io_timeout = io_timeout
        self.connections = Connections(limit, request_timeout)
        self._refused_hosts: set[str] = set()

    def get_request(self) -> tuple[Any, Any]:
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                self.connections.warn("accept", "cannot accept connections: %s", exc.strerror)
                time.sleep(ACCEPT_PAUSE)  # the listener stays readable: without a pause this loop spins
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        if self.connections.admit(request):
            super().process_request(request, client_address)
            return
        try:
            request.setblocking(False)
            request.send(BUSY)
        except OSError:
            pass
        self.shutdown_request(request)

    def shutdown_request(self, request: Any) -> None:
        self.connections.remove(request)
        super().shutdown_request(request)

    def service_actions(self) -> None:
        """From the accept loop, at least every half second."""
        self.connections.close_overdue()

    def refuse_host(self, host: str) -> HttpError:
        """The answer to a request for a Host this sidecar does not serve; the first refusal
        of each such host is logged, to help whoever sets up a proxy."""
        if host not in self._refused_hosts and len(self._refused_hosts) < REFUSED_HOSTS_LOGGED:
            self._refused_hosts.add(host)
            log.warning("metrics sidecar: refused a request for Host %r: add that name to --allowed-hosts "
                        "(GTA_ALLOWED_HOSTS) if it is this server's", host[:200])
        return HttpError(400, "this server does not answer to the host name in the Host header "
                              "(see allowed_hosts in docs/dashboard.md)")

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line, not http.server's traceback on stderr (a client hanging up is routine)."""
        log.debug("request from %s failed: %r", client_address, sys.exc_info()[1])
