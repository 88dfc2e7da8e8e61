"""The sidecar and its dashboard attacked as in issue 36, one test per finding, over real HTTP
(raw sockets where the request must be malformed) against a live supervisor's sidecar; the
server's own bounds also in process, with short timeouts. The browser halves of findings 1
and 2 are in test_dashboard_browser.py; 10 in test_config_cli.py; 11 in test_admin_cli.py.
"""
from __future__ import annotations

import contextlib
import os
import re
import resource
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

import gta_core
from gta_core.errors import InvalidArguments
from gta_core.metrics.hosts import AllowedHosts
from gta_core.metrics.server import MAX_CONNECTIONS, Reply, Request, Server

from ..support import dashboard_client
from ..support.dashboard_client import read_until_closed
from ..support.helpers import Env, children, cmdline, wait_for
from ..support.servers import http_get

SQLITE = pytest.mark.parametrize("backend", ["sqlite"])  # HTTP is the subject: one database is enough
LEAKS = ("Traceback", "Error:", "Exception", "int too large", "OverflowError", "ValueError", "invalid literal")


def _head(answer: bytes) -> tuple[int, list[str]]:
    """The status and header lines of a raw answer; exactly one status line."""
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    assert answer.count(b"HTTP/1.") == 1, answer[:2000]
    lines = head.split("\r\n")
    return int(lines[0].split()[1]), lines[1:]


def _post(path: str, body: bytes, *headers: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            + "".join(f"{header}\r\n" for header in headers) + "\r\n").encode("latin-1") + body


def _sidecar_pid(server: dashboard_client.DashboardServer) -> int:
    return wait_for(lambda: next((pid for pid in children(server.process.pid)
                                  if "gta_core.metrics.sidecar" in cmdline(pid)), None), what="the sidecar")


def _status_field(pid: int, name: str) -> int:
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(name + ":"))
    return int(line.split()[1])


# -- 1. header injection through `next` ---------------------------------------------------------
@SQLITE
def test_sign_in_redirects_only_to_a_clean_local_path(env: Env) -> None:
    server = dashboard_client.start(env)
    cases = {
        "/\r\nSet-Cookie: injected=pwned; Path=/": "/",
        "/\t/evil.example": "/",  # browsers drop the tab: //evil.example
        "/\\evil.example": "/",
        "//evil.example": "/",
        "https://evil.example/": "/",
        "/tasks\x85x": "/",  # a C1 control
        "/\u0100": "/%C4%80",  # beyond Latin-1: two status lines once
        "/tasks?queue=a b&status=failed": "/tasks?queue=a%20b&status=failed",
        "/tasks/7#frag": "/tasks/7",
    }
    for next_path, location in cases.items():
        body = urlencode({"token": dashboard_client.TOKEN, "next": next_path}).encode()
        status, headers = _head(server.raw(_post("/signin", body, f"Content-Length: {len(body)}")))
        assert status == 303, (next_path, headers)
        assert f"Location: {location}" in headers, (next_path, headers)
        cookies = [header for header in headers if header.lower().startswith("set-cookie:")]
        assert len(cookies) == 1 and cookies[0].startswith("Set-Cookie: gta_dashboard="), headers
        assert not any("injected" in header for header in headers)
    signin = server.request("GET", "/signin?" + urlencode({"next": "/\r\nSet-Cookie: injected=1"}))
    assert signin.status == 200 and 'name="next" value="/"' in signin.body


def test_no_response_carries_a_header_with_a_control_or_non_latin1_character() -> None:
    """The second line of defence, at the one place responses are written: whatever a route
    puts in a header, the response is a plain 500 with no injected header."""
    values = {"/crlf": "/\r\nSet-Cookie: injected=1", "/lf": "a\nb", "/nul": "a\x00b", "/wide": "/\u0100",
              "/fine": "/tasks?x=é"}

    def app(request: Request) -> Reply:
        return Reply(303, b"", headers=[("Location", values[request.path])])

    with _served(app) as port:
        for path in values:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
                answer = read_until_closed(sock)
            status, headers = _head(answer)
            if path == "/fine":
                assert status == 303 and "Location: /tasks?x=é" in headers
            else:
                assert status == 500 and not any(h.startswith(("Location", "Set-Cookie")) for h in headers), answer
                assert b"injected" not in answer


# -- 2. DNS rebinding: the Host check -----------------------------------------------------------------
@SQLITE
def test_only_allowed_host_names_are_answered_on_every_route(env: Env) -> None:
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "greet", {"name": "private-arg-0451"}, delay=3600)
    server = dashboard_client.start(env, settings={"GTA_ALLOWED_HOSTS": "gta.example.com,.corp.example"})
    port = server.port
    for path in ("/", f"/tasks/{task_id}", "/metrics", "/healthz", "/signin", "/static/style.css", "/nowhere"):
        refused = server.request("GET", path, headers={"Host": f"rebind.test:{port}"})
        assert refused.status == 400 and "private-arg" not in refused.body and "gta_" not in refused.body, path
    allowed = ["127.0.0.1", f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST.", f"[::1]:{port}",
               socket.gethostname(), "gta.example.com", "a.corp.example", "corp.example:443"]
    for host in allowed:
        page = server.request("GET", f"/tasks/{task_id}", headers={"Host": host})
        assert page.status == 200 and "private-arg-0451" in page.body, host
    for host in ["rebind.test", "gta.example.com.evil.test", "localhost.evil.test", "127.0.0.1.nip.io",
                 "evilcorp.example", "10.0.0.5", "127.0.0.1:x", "[::1", "a b", ""]:
        assert server.request("GET", "/metrics", headers={"Host": host}).status == 400, host
    absolute = server.raw(f"GET http://rebind.test:{port}/tasks/{task_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                          .encode())
    assert _head(absolute)[0] == 400 and b"private-arg" not in absolute
    assert http_get(f"{server.base}/metrics")[0] == 200  # Python's client sends Host 127.0.0.1:PORT
    log = server.process.log()
    assert log.count("refused a request for Host 'rebind.test:") == 1, log  # once per name, not per request


def test_host_rules_for_each_kind_of_bind() -> None:
    """An address cannot be rebound, only a name: bound to every interface, any address is
    this sidecar's; bound to one, only that one, loopback and the listed ones."""
    one = AllowedHosts("10.0.0.5:9464", ["[2001:db8::1]", "203.0.113.7", "gta.example.com", ".corp"], hostname="Node1")
    allowed = ["10.0.0.5:9464", "[2001:db8::1]:80", "203.0.113.7", "127.0.0.2", "node1:9464", "NODE1.", "x.corp",
               "corp", "gta.example.com", None]
    assert [host for host in allowed if not one.allows(host)] == []
    refused = ["10.0.0.6", "evil.test", "gta.example.com.evil.test", "xcorp", "", "node1:port"]
    assert [host for host in refused if one.allows(host)] == []
    anywhere = AllowedHosts("0.0.0.0:9464", hostname="node1")
    assert anywhere.allows("192.0.2.1:9464") and anywhere.allows("[2001:db8::2]") and not anywhere.allows("evil.test")
    assert AllowedHosts("[::]:9464", hostname="n").allows("10.1.1.1")
    assert AllowedHosts("127.0.0.1:9464", ["*"], hostname="n").allows("evil.test")


# -- 3. request bodies ------------------------------------------------------------------------------
@SQLITE
def test_request_bodies_are_bounded_and_read_only_after_the_access_checks(env: Env) -> None:
    server = dashboard_client.start(env)
    pid = _sidecar_pid(server)
    megabyte = b"x" * (1024 * 1024)
    refusals = {
        "Content-Length: -1": 400, "Content-Length: abc": 400, "Content-Length: 1e3": 400, "Content-Length: +5": 400,
        "Content-Length: \xb2": 400, "Content-Length: 99999999999999999999": 413,
        "Content-Length: 5\r\nContent-Length: 6": 400, "Transfer-Encoding: chunked": 411, "X-No-Length: 1": 411,
        "Content-Length: 70000": 413,
    }
    for header, status in refusals.items():
        started = time.monotonic()
        # the body follows and the connection stays open for writing: an answer now means the
        # server did not wait for the body (a read to EOF never ends here)
        answer = server.raw(_post("/signin", megabyte, header), shut_write=False)
        assert _head(answer)[0] == status, (header, answer[:300])
        assert time.monotonic() - started < 5, header
        assert not any(leak.encode() in answer for leak in LEAKS), answer
    # an action announces a valid body it never sends: refused (not signed in) without waiting for it
    started = time.monotonic()
    answer = server.raw(_post("/tasks/1/retry", b"", "Content-Length: 60000"), shut_write=False)
    assert _head(answer)[0] == 403 and time.monotonic() - started < 5
    assert server.request("POST", "/metrics", {"a": "b"}).status == 405
    assert _status_field(pid, "VmHWM") < 150_000  # kB: the megabytes sent were never read


# -- 4. connections -----------------------------------------------------------------------------------
@SQLITE
def test_idle_connections_cannot_starve_metrics_and_healthz(env: Env) -> None:
    """At the open-file limit (lowered to 128 here) idle connections once stopped every answer
    and spun a core; now the server holds at most MAX_CONNECTIONS, closing the idlest."""
    server = dashboard_client.start(env)
    pid = _sidecar_pid(server)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (128, 128))
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(150)]
    try:
        assert http_get(f"{server.base}/metrics", timeout=10)[0] == 200
        assert http_get(f"{server.base}/healthz", timeout=10)[0] in (200, 503)
        assert server.request("GET", "/").status == 200
        readable = select.select(idle, [], [], 2)[0]
        closed = sum(1 for sock in readable if read_until_closed(sock) == b"")
        assert closed >= 150 - MAX_CONNECTIONS, closed
        assert _status_field(pid, "Threads") <= MAX_CONNECTIONS + 8
    finally:
        for sock in idle:
            sock.close()


def test_the_server_closes_slow_clients_and_refuses_beyond_its_cap_when_all_are_busy() -> None:
    release = threading.Event()
    answering: list[str] = []

    def app(request: Request) -> Reply:
        if request.path == "/slow":
            answering.append(request.path)
            release.wait(10)
        return Reply(200, b"ok\n")

    with _served(app, limit=3, request_timeout=0.5, io_timeout=0.3) as port:
        def connect() -> socket.socket:
            return socket.create_connection(("127.0.0.1", port), timeout=5)

        silent, trickling = connect(), connect()
        started = time.monotonic()

        def trickle() -> None:  # a byte every 0.1 s for 4 s: never idle for the 0.3 s I/O timeout
            with contextlib.suppress(OSError):
                for byte in b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\nX-Slow: " + b"x" * 20:
                    trickling.send(bytes([byte]))
                    time.sleep(0.1)

        threading.Thread(target=trickle, daemon=True).start()
        assert read_until_closed(silent) == b""
        assert read_until_closed(trickling) == b""  # hung up on at the request timeout, not the end of the trickle
        assert time.monotonic() - started < 2
        busy = [connect() for _ in range(3)]
        for sock in busy:
            sock.sendall(b"GET /slow HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        wait_for(lambda: len(answering) == 3, 10, "three requests being answered")
        refused = connect()
        answer = read_until_closed(refused)
        assert answer.startswith(b"HTTP/1.0 503") and b"Retry-After: 1" in answer
        release.set()
        assert all(read_until_closed(sock).startswith(b"HTTP/1.0 200") for sock in busy)
        for sock in (silent, trickling, refused, *busy):
            sock.close()


# -- 5. sign-in throttle ---------------------------------------------------------------------------
@SQLITE
def test_wrong_tokens_lock_out_their_client_only(env: Env) -> None:
    server = dashboard_client.start(env)
    wrong = {"token": "wrong-token-0123456789", "next": "/"}
    right = {"token": dashboard_client.TOKEN, "next": "/"}
    statuses: list[int] = []
    retry_after = 0
    while retry_after < 3:  # 5 wrong tokens are free, then each locks out for longer: 1 s, 2 s, 4 s
        reply = server.request("POST", "/signin", wrong)
        statuses.append(reply.status)
        retry_after = int(reply.headers.get("Retry-After", 0))
        assert len(statuses) < 100, statuses
        time.sleep(0.1)
    assert statuses[:6] == [403] * 6 and set(statuses) == {403, 429}, statuses
    locked = server.request("POST", "/signin", right)
    assert locked.status == 429 and "Set-Cookie" not in locked.headers  # the token was not even looked at
    assert server.request("POST", "/signin", right, source="127.0.0.2").status == 303  # another client
    wait_for(lambda: server.request("POST", "/signin", right).status == 303, 30, "the lockout to end", interval=0.5)
    # one line per wrong token looked at, none for the refused attempts
    assert server.process.log().count("dashboard sign-in with a wrong token") == statuses.count(403)


# -- 6. sessions -------------------------------------------------------------------------------------
@SQLITE
def test_sessions_end_at_sign_out_and_idle_and_csrf_values_are_bound_and_single_use(env: Env) -> None:
    server = dashboard_client.start(env, settings={"GTA_DASHBOARD_SESSION_IDLE": "3s"})
    ids = gta_core.submit_many(gta_core.OWN_TRANSACTION, [("record", {"n": n}) for n in range(3)])
    for task_id in ids:
        env.set_columns(task_id, status="failed")
    same_site = {"Origin": server.base, "Sec-Fetch-Site": "same-origin"}
    first, second = server.sign_in(), server.sign_in()
    csrf = server.csrf(first, f"/tasks/{ids[0]}")
    spare = server.csrf(first, f"/tasks/{ids[0]}")

    def retry(task_id: int, cookie: str, value: str) -> int:
        return server.request("POST", f"/tasks/{task_id}/retry", {"csrf": value},
                              {**same_site, "Cookie": cookie}).status

    assert retry(ids[0], second, csrf) == 403  # another session's value
    assert retry(ids[0], first, csrf) == 303
    assert retry(ids[1], first, csrf) == 403  # used already
    signed_out = server.request("POST", "/signout", {"csrf": spare}, {**same_site, "Cookie": first})
    assert signed_out.status == 303 and "Max-Age=0" in signed_out.headers["Set-Cookie"]
    assert retry(ids[1], first, server.csrf(second, f"/tasks/{ids[1]}")) == 403  # its session is over
    assert "Sign in for actions" in server.request("GET", "/", headers={"Cookie": first}).body
    late = server.csrf(second, f"/tasks/{ids[1]}")
    time.sleep(3.5)  # unused for longer than its idle time
    assert retry(ids[1], second, late) == 403
    assert env.statuses(ids[1:]) == {ids[1]: "failed", ids[2]: "failed"}


# -- 7. bad input ------------------------------------------------------------------------------------
@SQLITE
def test_bad_input_is_a_4xx_with_a_short_message_never_an_exception_text(env: Env) -> None:
    server = dashboard_client.start(env)
    paths = ["/tasks/9223372036854775808", "/tasks/9999999999999999999", "/tasks/%C2%B2", "/tasks?before=%C2%B2",
             "/tasks?before=99999999999999999999", "/tasks?since=0001-01-01T00:00%2B14:00",
             "/tasks?until=9999-12-31T23:59-14:00", "/tasks?error=" + "x" * 60_000, "/tasks?queue=%00",
             "/tasks?since=" + "9" * 400, "/tasks?retried=%C2%B2", "/?done=%C2%B2"]
    for path in paths:
        reply = server.request("GET", path)
        assert reply.status < 500 and not any(leak in reply.body for leak in LEAKS), (path[:80], reply.body[-500:])
    assert server.request("GET", "/tasks/9223372036854775808").status == 404
    assert server.request("GET", "/tasks?error=" + "x" * 60_000).status == 400
    cookie = server.sign_in()
    csrf = server.csrf(cookie, "/")
    too_big = server.request("POST", "/tasks/9999999999999999999/retry", {"csrf": csrf}, {"Cookie": cookie})
    assert too_big.status == 404 and not any(leak in too_big.body for leak in LEAKS)
    answer = server.raw(_post("/signin", b"token=x", "Content-Length: abc"))
    assert _head(answer)[0] == 400 and not any(leak.encode() in answer for leak in LEAKS)


# -- 8. label cardinality ------------------------------------------------------------------------------
@SQLITE
def test_queues_beyond_the_cap_are_summed_under_other_in_metrics_and_the_overview(env: Env) -> None:
    load = {"default": 1, "q0": 5, "q1": 4, "q2": 1, "q3": 1, "q4": 1, "q5": 1}
    gta_core.submit_many(gta_core.OWN_TRANSACTION, [gta_core.TaskRequest("record", {"n": n}, queue=queue, delay=3600)
                                                    for queue, count in load.items() for n in range(count)])
    server = dashboard_client.start(env, settings={"GTA_METRICS_MAX_QUEUES": "3"})
    status, body = http_get(f"{server.base}/metrics")
    assert status == 200
    depth = {queue: float(value) for queue, value in re.findall(
        r'gta_queue_depth\{queue="([^"]*)",status="pending"\} (\S+)', body.decode())}
    assert depth == {"default": 1.0, "q0": 5.0, "q1": 4.0, "__other__": 4.0}  # served, then the busiest
    overview = server.request("GET", "/").body
    assert "4 more queues" in overview and "q0" in overview and ">q5<" not in overview


# -- 9. argument size and depth -----------------------------------------------------------------------
def _nested(depth: int) -> dict[str, object]:
    value: dict[str, object] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@SQLITE
def test_arguments_too_deep_or_too_big_are_refused_and_nothing_is_written(env: Env) -> None:
    before = env.store.counts()
    gta_core.submit(gta_core.OWN_TRANSACTION, "greet", {"name": "ok", "punctuation": str(_nested(32))})
    with pytest.raises(InvalidArguments, match="args_max_depth"):
        gta_core.submit(gta_core.OWN_TRANSACTION, "greet", {"name": _nested(32)})  # 33 levels with the args
    with pytest.raises(InvalidArguments, match="args_max_depth"):
        gta_core.submit(gta_core.OWN_TRANSACTION, "greet", {"name": "x"}, context={"deep": _nested(40)})
    with pytest.raises(InvalidArguments, match=r"1,048,576 \(setting args_max_bytes"):
        gta_core.submit(gta_core.OWN_TRANSACTION, "greet", {"name": "x" * 1_048_576})
    assert sum(env.store.counts().values()) == sum(before.values()) + 1  # only the first was written
    refused = subprocess.run([sys.executable, "-c", "import sys; from gta_core.cli.main import main; sys.exit(main())",
                              "submit", "greet", "--args", '{"name": "' + "x" * 200 + '"}'],
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, "GTA_ARGS_MAX_BYTES": "100"})
    assert refused.returncode == 2 and "args_max_bytes" in refused.stderr and len(refused.stderr.splitlines()) == 1


@SQLITE
def test_a_stored_argument_too_deep_or_too_big_still_shows_on_its_page(env: Env) -> None:
    """Rows written before the limits (here: directly) neither break nor bloat the task page."""
    deep, wide = gta_core.submit_many(gta_core.OWN_TRANSACTION, [("record", {}), ("record", {})])
    env.set_columns(deep, args="[" * 985 + "]" * 985)
    env.set_columns(wide, args='{"blob": "' + "y" * 3_000_000 + '"}')
    server = dashboard_client.start(env)
    page = server.request("GET", f"/tasks/{deep}")
    assert page.status == 200 and "[[[[" in page.body
    page = server.request("GET", f"/tasks/{wide}")
    assert page.status == 200 and len(page.body) < 400_000 and "3,000,012 characters in all" in page.body


# -- helpers --------------------------------------------------------------------------------------
@contextlib.contextmanager
def _served(app: object, **bounds: float) -> Iterator[int]:
    """``app`` served in this process on a free loopback port, with the server's bounds overridden."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    server = Server(listener, app, AllowedHosts("127.0.0.1:0"), **bounds)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        server.shutdown()
        server.server_close()
