"""The dashboard without a browser: its read queries on every database, its access rules over
real HTTP against a live supervisor's sidecar, and its start-up checks.

The browser tests are in test_dashboard_browser.py.
"""
from __future__ import annotations

import datetime as dt
import io
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import gta_core
from gta_core.config import load_settings
from gta_core.dashboard.access import Guard, prepare, same_origin
from gta_core.dashboard.inputs import args_fragment
from gta_core.dashboard.pages import error_history
from gta_core.dashboard.queries import PREVIEW, DashboardReads, Filters, ReadTimeout
from gta_core.dashboard.sessions import Sessions
from gta_core.dashboard.throttle import SignInThrottle
from gta_core.errors import ConfigError
from gta_core.store.roster import unhandled
from gta_core.store.sql.statements import RERUN_ERROR_PREFIX

from ..support import dashboard_client
from ..support.backends import BACKENDS, only_on
from ..support.helpers import Env, wait_for
from ..support.servers import free_port, http_get

XSS = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


def _reads(env: Env, timeout: float = 5.0) -> DashboardReads:
    return DashboardReads(env.db_url, env.table, timeout)


# -- read queries, on every database -------------------------------------------------------------
def test_task_list_pages_newest_first_with_every_filter(env: Env) -> None:
    ids = gta_core.submit_many(gta_core.OWN_TRANSACTION, [("record", {"n": n}) for n in range(7)])
    other = gta_core.submit(gta_core.OWN_TRANSACTION, "greet", {"name": "x" * (PREVIEW * 3)}, queue="mail")
    env.set_columns(ids[1], status="failed", last_error="boom: 100% _odd_ chars")
    env.set_columns(ids[2], status="failed", last_error="boom: 100 percent")
    env.set_columns(ids[3], status="cancelled")
    reads = _reads(env)
    with reads.session():
        first = reads.page(Filters(), None, 3)
        second = reads.page(Filters(), first[-1]["id"], 3)
        rest = reads.page(Filters(), second[-1]["id"], 10)
        failed = reads.page(Filters(status="failed"), None, 10)
        literal = reads.page(Filters(error="100% _odd_"), None, 10)  # % and _ are text, not wildcards
        mail = reads.page(Filters(queue="mail", key="greet"), None, 10)
        later = reads.page(Filters(since=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)), None, 10)
        earlier = reads.page(Filters(until=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)), None, 10)
        recent = reads.page(Filters(since=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)), None, 10)
        retryable = reads.matching_ids(Filters(), ("failed", "cancelled"), None, 10)
        counted = [reads.count_matching(Filters(), ("failed", "cancelled"), cap) for cap in (2, 10)]
        by_argument = reads.page(Filters(args=args_fragment("n=4")), None, 10)
        by_text = reads.page(Filters(args=args_fragment("x" * PREVIEW)), None, 10)
        on_screen = reads.rows([ids[0], other, ids[5]])
        newer = [reads.newer(Filters(), ids[4], 1000), reads.newer(Filters(status="failed"), ids[0], 1000),
                 reads.newer(Filters(), ids[0], 3), reads.newer(Filters(), other, 1000)]
    everything = [task["id"] for task in first + second + rest]
    assert everything == sorted([*ids, other], reverse=True)
    assert [task["id"] for task in failed] == [ids[2], ids[1]]
    assert [task["id"] for task in literal] == [ids[1]]
    assert [task["id"] for task in mail] == [other]
    assert len(mail[0]["args"]) == PREVIEW + 1  # cut in SQL, one more character tells it was cut
    assert later == [] and earlier == [] and len(recent) == 8
    assert retryable == [ids[3], ids[2], ids[1]] and counted == [2, 3]  # the walk stops at the cap
    assert [task["id"] for task in by_argument] == [ids[4]] and [task["id"] for task in by_text] == [other]
    assert [task["id"] for task in on_screen] == [other, ids[5], ids[0]]  # by primary key, newest first
    assert newer == [3, 2, None, 0]  # None: more new ids than the span looked at


def test_overview_queries(env: Env) -> None:
    parent = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {})
    children = gta_core.submit_many(gta_core.OWN_TRANSACTION, [("record", {"n": n}) for n in range(3)])
    for child in children:
        env.set_columns(child, parent_id=parent)
    env.set_columns(children[0], status="succeeded", finished_at=env.store._moment(dt.datetime.now(dt.timezone.utc)))
    env.set_columns(children[1], status="failed", finished_at=env.store._moment(dt.datetime.now(dt.timezone.utc)))
    env.set_columns(children[2], status="running", lease_owner="host-a:4242.0:abc")
    moment = env.store._moment(dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=3))
    env.set_columns(children[0], started_at=moment, run_at=env.store._moment(dt.datetime.now(dt.timezone.utc)
                                                                        - dt.timedelta(seconds=10)))
    reads = _reads(env)
    with reads.session():
        now = reads.now()
        finished = reads.finished_counts(now - dt.timedelta(hours=1), now + dt.timedelta(minutes=1))
        waits = reads.wait_samples(now - dt.timedelta(hours=1), now + dt.timedelta(minutes=1), 10)
        running = reads.running_tasks()
        depth = reads.queue_depth()
        kids = reads.children(parent)
        counts = reads.counts()
        groups = reads.pending_groups()
        roster = reads.supervisors()
    assert abs((now - dt.datetime.now(dt.timezone.utc)).total_seconds()) < 60
    assert sorted((queue, status, count) for _, queue, status, count in finished) == [
        ("default", "failed", 1), ("default", "succeeded", 1)]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", minute) for minute, _, _, _ in finished)
    assert [(queue, round(wait)) for _, queue, wait in waits] == [("default", 7)]  # due 10 s ago, started 3 s ago
    assert [(task["id"], task["lease_owner"]) for task in running] == [(children[2], "host-a:4242.0:abc")]
    assert kids == [(children[0], "record", "succeeded"), (children[1], "record", "failed"),
                    (children[2], "record", "running")]
    assert depth["default"].pending == depth["default"].due == 1 and depth["default"].running == 1
    assert depth["default"].oldest_due is not None and counts[("default", "pending")] == 1
    # no supervisor runs here: the pending task is one no live supervisor handles
    assert roster == [] and [(group.key, group.queue, group.waiting) for group in unhandled(groups, roster)] == [
        ("record", "default", 1)]


def test_the_first_page_reads_the_primary_key_backwards(env: Env, backend: str) -> None:
    """No sort of the whole table: the first page walks the primary key from the newest row."""
    gta_core.submit_many(gta_core.OWN_TRANSACTION, [("record", {"n": n}) for n in range(20_000)])
    env.runtime.db.execute_sql({"sqlite": "ANALYZE", "postgres": f"ANALYZE {env.table}",
                                "mariadb": f"ANALYZE TABLE {env.table}"}[backend])
    reads = _reads(env)
    statement, params = reads.page_statement(Filters(), None, 51)
    explain = {"sqlite": "EXPLAIN QUERY PLAN ", "postgres": "EXPLAIN ", "mariadb": "EXPLAIN "}[backend]
    with reads.session():
        plan = " ".join(str(cell) for row in reads._rows(explain + statement, params) for cell in row)
    assert "TEMP B-TREE" not in plan and "Sort" not in plan and "filesort" not in plan, plan
    if backend == "postgres":
        assert "Index Scan Backward" in plan, plan


@pytest.mark.parametrize("backend", ["sqlite", only_on("postgres"), only_on("mariadb")])
def test_a_slow_read_is_cut_at_its_time_bound(env: Env, backend: str) -> None:
    slow = {"sqlite": "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT COUNT(*) FROM n",
            "postgres": "SELECT pg_sleep(30)",
            "mariadb": "SELECT COUNT(*) FROM information_schema.columns a, information_schema.columns b, "
                       "information_schema.columns c"}[backend]
    reads = _reads(env, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(ReadTimeout), reads.session():
        reads._rows(slow)
    assert time.monotonic() - started < 15


# -- access: unit -----------------------------------------------------------------------------------
def test_sessions_expire_end_at_sign_out_and_bind_single_use_csrf_values() -> None:
    now = [1000.0]
    sessions = Sessions(idle=60, max_age=600, clock=lambda: now[0])
    guard = Guard(dashboard_client.TOKEN, sessions)
    cookie = guard.sign_in().split(";", 1)[0]
    assert dashboard_client.TOKEN not in cookie  # the cookie never carries the token
    session = guard.session(cookie)
    assert session is not None and guard.session(cookie[:-1] + "x") is None and guard.session(None) is None
    value, other = guard.form_value(session), guard.form_value(session)
    another = sessions.begin()
    assert not guard.spend_form_value(another, value)  # bound to its session
    assert not guard.spend_form_value(session, value + "0") and not guard.spend_form_value(session, "")
    assert guard.spend_form_value(session, value) and not guard.spend_form_value(session, value)  # one action
    for _ in range(10):  # used every 59 s: the idle time restarts each time, for up to max_age
        now[0] += 59
        assert guard.session(cookie) == session
    now[0] += 59  # 649 s after it began
    assert guard.session(cookie) is None and not guard.spend_form_value(session, other)
    idle = sessions.begin()
    now[0] += 59
    assert sessions.live(idle, touch=False)  # a live update: looked at, not used
    now[0] += 2
    assert not sessions.live(idle)
    ended = guard.session(guard.sign_in().split(";", 1)[0])
    assert ended is not None
    guard.sign_out(ended)
    assert not sessions.live(ended)
    read_only = Guard("", sessions)
    assert not read_only.enabled and not read_only.token_matches("") and read_only.session(cookie) is None


def test_sign_in_throttle_doubles_the_lockout_per_client() -> None:
    now = [0.0]
    throttle = SignInThrottle(clock=lambda: now[0])
    assert [throttle.wrong("a") for _ in range(8)] == [0, 0, 0, 0, 0, 1, 2, 4]
    assert throttle.locked_for("a") == 4 and throttle.locked_for("b") == 0
    now[0] += 4
    assert throttle.locked_for("a") == 0
    assert max(throttle.wrong("a") for _ in range(30)) == 300  # capped
    throttle.right("a")
    assert throttle.locked_for("a") == 0 and throttle.wrong("a") == 0


def test_origin_rules() -> None:
    assert same_origin({"Host": "127.0.0.1:9464", "Origin": "http://127.0.0.1:9464", "Sec-Fetch-Site": "same-origin"})
    assert same_origin({})  # a client that sends neither (curl) is judged by token and CSRF value alone
    assert not same_origin({"Host": "127.0.0.1:9464", "Origin": "http://evil.example"})
    assert not same_origin({"Host": "127.0.0.1:9464", "Origin": "null"})
    assert not same_origin({"Sec-Fetch-Site": "cross-site"}) and not same_origin({"Sec-Fetch-Site": "same-site"})


def test_start_refuses_a_network_bind_without_token_and_prints_a_generated_one() -> None:
    with pytest.raises(ConfigError, match="without a token"):
        prepare(load_settings({"metrics_bind": "0.0.0.0:9464"}, environ={}))
    prepare(load_settings({"metrics_bind": "0.0.0.0:9464", "dashboard": "off"}, environ={}))
    prepare(load_settings({"metrics_bind": "[::1]:9464"}, environ={}))
    out = io.StringIO()
    settings = prepare(load_settings({"dashboard_token": "generate"}, environ={}), out)
    assert len(settings.dashboard_token) >= 16 and settings.dashboard_token in out.getvalue()
    assert settings.dashboard_token not in repr(settings)
    with pytest.raises(ConfigError, match="at least 16"):
        load_settings({"dashboard_token": "short"}, environ={})


def test_gta_supervisor_refuses_a_network_bind_without_token(env: Env) -> None:
    result = subprocess.run([sys.executable, "-m", "gta_core.cli_supervisor", "--metrics", "on", "--metrics-bind",
                             f"0.0.0.0:{free_port()}"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "without a token" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_error_history_unrolls_operator_retries() -> None:
    assert error_history(None) == []
    assert error_history("boom") == ["boom"]
    assert error_history(f"{RERUN_ERROR_PREFIX}{RERUN_ERROR_PREFIX}first") == ["first"]


# -- access over HTTP, against a live sidecar -------------------------------------------------------
def test_actions_need_the_token_a_session_and_the_csrf_value(env: Env, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    flag.touch()
    server = dashboard_client.start(env)
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "fails_while_flag", {"flag": str(flag)})
    assert env.wait_final([task_id]) == {task_id: "failed"}
    flag.unlink()
    retry = f"/tasks/{task_id}/retry"
    same_site = {"Origin": server.base, "Sec-Fetch-Site": "same-origin"}

    wrong = server.request("POST", "/signin", {"token": "wrong-token-0123456789"}, same_site)
    assert wrong.status == 403 and "wrong token" in wrong.body and "Set-Cookie" not in wrong.headers
    cookie = server.sign_in()
    csrf = server.csrf(cookie, f"/tasks/{task_id}")
    refused = [
        server.request("POST", retry, {"csrf": csrf}, same_site),  # no session
        server.request("POST", retry, {"csrf": csrf}, {**same_site, "Cookie": cookie[:-2] + "xx"}),  # wrong session
        server.request("POST", retry, {}, {**same_site, "Cookie": cookie}),  # no CSRF value
        server.request("POST", retry, {"csrf": csrf[:-2] + "00"}, {**same_site, "Cookie": cookie}),
        server.request("POST", retry, {"csrf": csrf}, {"Cookie": cookie, "Origin": "http://evil.example"}),
        server.request("POST", retry, {"csrf": csrf}, {"Cookie": cookie, "Sec-Fetch-Site": "cross-site"}),
    ]
    assert [reply.status for reply in refused] == [403] * len(refused)
    assert all("Nothing was changed" in reply.body for reply in refused)
    assert env.statuses([task_id]) == {task_id: "failed"}

    done = server.request("POST", retry, {"csrf": csrf}, {**same_site, "Cookie": cookie})
    assert done.status == 303 and done.headers["Location"] == f"/tasks/{task_id}"
    wait_for(lambda: env.statuses([task_id]) == {task_id: "succeeded"}, what="the retried task to succeed")
    notices = [re.findall(r'<p class="notice"[^>]*>([^<]*)</p>',
                          server.request("GET", f"/tasks/{task_id}", headers={"Cookie": cookie}).body) for _ in "12"]
    assert notices == [[f"Retried task {task_id}: it is pending again."], []]  # shown once, not after a reload


def test_read_only_without_token_and_inert_huge_or_hostile_values(env: Env) -> None:
    big = "y" * 1_000_000
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "greet", {"name": XSS, "punctuation": big})
    env.set_columns(task_id, status="failed", last_error=XSS)
    server = dashboard_client.start(env, token=None)
    listing = server.request("GET", "/tasks")
    assert listing.status == 200 and len(listing.body) < 50_000  # the megabyte stayed in the database
    assert "… (cut)" in listing.body
    detail = server.request("GET", f"/tasks/{task_id}")
    for page in (listing, detail):
        assert "<script>window" not in page.body and "&lt;script&gt;window.pwned=1&lt;/script&gt;" in page.body
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "read-only" in detail.body and "Retry" not in detail.body
    for page in (listing, detail, server.request("GET", "/queues"), server.request("GET", "/workers"),
                 server.request("GET", "/")):
        assert page.status == 200 and 'method="post"' not in page.body  # no button the server would refuse
    refused = server.request("POST", f"/tasks/{task_id}/retry", {"csrf": "x.y"})
    assert refused.status == 403 and "read-only" in refused.body
    assert server.request("POST", "/signin", {"token": ""}).status == 403
    assert env.statuses([task_id]) == {task_id: "failed"}
    assert server.request("GET", "/tasks?status=bogus").status == 400
    assert server.request("GET", "/tasks?since=yesterday").status == 400
    assert server.request("GET", "/tasks/999999999").status == 404


@pytest.mark.skipif(not BACKENDS["postgres"], reason="needs PostgreSQL (a table lock to make a page slow)")
@pytest.mark.parametrize("backend", ["postgres"])
def test_metrics_and_healthz_answer_while_a_page_is_slow(env: Env) -> None:
    """A page blocked on the database is served on its own thread: scrapes go on meanwhile."""
    server = dashboard_client.start(env)
    locker = gta_core.runtime.Runtime(env.runtime.settings).db
    with locker.atomic():
        locker.execute_sql(f"LOCK TABLE {env.table} IN ACCESS EXCLUSIVE MODE")
        page: list[int] = []
        thread = threading.Thread(target=lambda: page.append(server.request("GET", "/tasks").status))
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive()  # the page waits on the lock, until its statement timeout (5 s)
        # the scrape and the probe wait on the database at most 3 s, then answer without it
        assert http_get(f"{server.base}/metrics", timeout=30)[0] == 200
        assert page == []  # answered while the page was still waiting: not queued behind it
        assert http_get(f"{server.base}/healthz", timeout=30)[0] in (200, 503)
        thread.join(30)
    locker.close()
    assert page == [503]  # cut by the statement timeout, not hung
