"""A supervisor whose sidecar serves the dashboard, and a tiny HTTP client for it (no redirects
followed, cookies and headers as the test says): shared by the dashboard's tests."""
from __future__ import annotations

import dataclasses
import http.client
import re
import socket
from urllib.parse import urlencode

from .helpers import Env, SupervisorProcess, wait_for
from .servers import free_port, http_get

TOKEN = "test-dashboard-token-0123456789"


@dataclasses.dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str


@dataclasses.dataclass
class DashboardServer:
    process: SupervisorProcess
    bind: str

    @property
    def base(self) -> str:
        return f"http://{self.bind}"

    @property
    def port(self) -> int:
        return int(self.bind.rpartition(":")[2])

    def request(self, method: str, path: str, form: dict[str, str] | None = None,
                headers: dict[str, str] | None = None, source: str | None = None) -> Reply:
        """One request (from the address ``source`` when given, e.g. another 127.x.y.z)."""
        host = self.bind.rpartition(":")[0]
        connection = http.client.HTTPConnection(host, self.port, timeout=30,
                                                source_address=(source, 0) if source else None)
        body = urlencode(form or {}) if method == "POST" else None
        sent = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})} if body is not None \
            else dict(headers or {})
        try:
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            return Reply(response.status, {name.title(): value for name, value in response.getheaders()},
                         response.read().decode("utf-8", "replace"))
        finally:
            connection.close()

    def raw(self, data: bytes, timeout: float = 10.0, shut_write: bool = True) -> bytes:
        """Send ``data`` as is on a new connection; everything the server sends back until it
        closes (``shut_write``: tell it nothing more is coming)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            try:
                sock.sendall(data)
                if shut_write:
                    sock.shutdown(socket.SHUT_WR)
            except OSError:  # the server may answer and hang up before taking all of it
                pass
            return read_until_closed(sock)

    def sign_in(self, token: str = TOKEN) -> str:
        """The session cookie (``name=value``) a correct sign-in gets."""
        reply = self.request("POST", "/signin", {"token": token, "next": "/"})
        assert reply.status == 303, reply.body
        return reply.headers["Set-Cookie"].split(";", 1)[0]

    def csrf(self, cookie: str, path: str) -> str:
        """The CSRF value of the first form on ``path`` as a signed-in browser sees it."""
        page = self.request("GET", path, headers={"Cookie": cookie})
        match = re.search(r'name="csrf" value="([^"]+)"', page.body)
        assert match, page.body
        return match[1]


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends on ``sock`` until it closes the connection (or resets it)."""
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass
    return answer


def start(env: Env, token: str | None = TOKEN, workers: int = 1,
          settings: dict[str, str] | None = None) -> DashboardServer:
    """A supervisor on ``env``'s table whose sidecar serves the dashboard on a free port
    (``settings``: more GTA_* variables)."""
    bind = f"127.0.0.1:{free_port()}"
    extra = {"GTA_METRICS": "on", "GTA_METRICS_BIND": bind, **(settings or {})}
    if token is not None:
        extra["GTA_DASHBOARD_TOKEN"] = token
    process = env.supervisor(workers, extra_env=extra)
    wait_for(lambda: _answers(bind), what="the dashboard to answer")
    return DashboardServer(process, bind)


def _answers(bind: str) -> bool:
    try:
        return http_get(f"http://{bind}/")[0] == 200
    except OSError:
        return False
