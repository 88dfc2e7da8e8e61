"""A supervisor whose sidecar serves the dashboard, and a tiny HTTP client for it (no redirects
followed, cookies and headers as the test says): shared by the dashboard's tests."""
from __future__ import annotations

import dataclasses
import http.client
import re
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

    def request(self, method: str, path: str, form: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        host, _, port = self.bind.rpartition(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
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


def start(env: Env, token: str | None = TOKEN, workers: int = 1) -> DashboardServer:
    """A supervisor on ``env``'s table whose sidecar serves the dashboard on a free port."""
    bind = f"127.0.0.1:{free_port()}"
    extra = {"GTA_METRICS": "on", "GTA_METRICS_BIND": bind}
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
