"""The dashboard's operator pages without a browser, on every database: queues with pause and
resume, workers, groups and chains, search, bulk actions with their cap, run now, flash
messages, live updates, the 24-hour history and its charts.

The routes run in process (`Dashboard.handle`, no HTTP: test_dashboard.py covers the
access rules over HTTP); test_dashboard_browser.py drives the same pages in Chromium.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
from typing import Any
from urllib.parse import urlencode

import pytest

import gta_core
from gta_core.dashboard import actions, charts, history
from gta_core.dashboard.app import Dashboard, Request
from gta_core.dashboard.history import ALL, History, Reading, TableReader
from gta_core.dashboard.inputs import args_fragment
from gta_core.dashboard.queries import DashboardReads, Filters, Fresh
from gta_core.metrics import catalog
from gta_core.metrics.catalog import Catalog, Handler, Schedule
from gta_core.metrics.database_gauges import OTHER
from gta_core.metrics.server import Reply

from ..support import dashboard_client
from ..support.backends import only_on
from ..support.helpers import Env

NOTICE = re.compile(r'<p class="notice"[^>]*>([^<]*)</p>')
OWNER = "host-b:777.3:token"


@dataclasses.dataclass
class Client:
    """A signed-in browser of an in-process dashboard (or a read-only one: ``cookie`` empty)."""

    dashboard: Dashboard
    cookie: str = ""

    @classmethod
    def signed_in(cls, env: Env, schedules: tuple[Schedule, ...] = ()) -> Client:
        settings = env.runtime.settings.replace(dashboard_token=dashboard_client.TOKEN)
        handlers = (Handler("record", "default", 0, 3, None, False, "tests.handlers.tasks"),
                    Handler("django:*", "default", 0, 1, None, False, "gta_core.contrib.django"))
        dashboard = Dashboard(settings, catalog=lambda: Catalog(handlers, schedules))
        signed_in = dashboard.handle(Request("POST", "/signin", {}, {"Host": "h"}, "client",
                                             lambda: urlencode({"token": dashboard_client.TOKEN}).encode()))
        return cls(dashboard, dict(signed_in.headers)["Set-Cookie"].split(";", 1)[0])

    def get(self, path: str, headers: dict[str, str] | None = None, **query: str) -> Reply:
        return self.dashboard.handle(Request("GET", path, query, {"Host": "h", "Cookie": self.cookie,
                                                                   **(headers or {})}))

    def post(self, path: str, **form: str) -> tuple[int, str]:
        """The answer's status and where it redirects (or its body)."""
        session = self.cookie.split("=", 1)[1]
        body = urlencode({**form, "csrf": self.dashboard.guard.form_value(session)}).encode()
        reply = self.dashboard.handle(Request("POST", path, {}, {"Cookie": self.cookie, "Host": "h"}, "client",
                                              lambda: body))
        return reply.status, dict(reply.headers).get("Location", reply.body.decode())

    def notices(self, path: str = "/tasks", **query: str) -> list[str]:
        return NOTICE.findall(self.get(path, **query).body.decode())


# -- actions ---------------------------------------------------------------------------------------
def test_bulk_actions_are_filtered_capped_confirmed_and_reported_once(env: Env, monkeypatch: Any) -> None:
    client = Client.signed_in(env)
    mail = gta_core.submit_many(gta_core.OWN_TRANSACTION, [gta_core.TaskRequest("record", {"n": n}, queue="mail")
                                                           for n in range(3)])
    other = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 9})
    waiting = gta_core.submit_many(gta_core.OWN_TRANSACTION, [gta_core.TaskRequest("record", {"n": n}, delay=3600)
                                                              for n in range(2)])
    for task_id in [*mail, other]:
        env.set_columns(task_id, status="failed", last_error=f"ValueError: boom {task_id}\n\nTraceback …")

    confirm = client.get("/tasks/bulk", action="retry", status="failed", queue="mail").body.decode()
    assert "3 failed task(s) match status &#x27;failed&#x27;, queue &#x27;mail&#x27;." in confirm
    assert 'action="/tasks/bulk"' in confirm and "Retry 3 task(s)" in confirm
    monkeypatch.setattr(actions, "BULK_CAP", 2)
    assert client.post("/tasks/bulk", action="retry", status="failed", queue="mail") == \
        (303, "/tasks?status=failed&queue=mail")
    assert env.statuses([*mail, other]) == {mail[0]: "failed", mail[1]: "pending", mail[2]: "pending",
                                            other: "failed"}  # the newest two: the cap; not the other queue
    (notice,) = client.notices(status="failed")
    assert notice.startswith("Retried 2 task(s) matching status &#x27;failed&#x27;, queue &#x27;mail&#x27;.")
    assert "run it again" in notice and client.notices() == []  # shown once
    monkeypatch.setattr(actions, "BULK_CAP", 10_000)
    assert client.post("/tasks/bulk", action="retry", queue="mail")[0] == 303
    assert client.notices() == ["Retried 1 task(s) matching queue &#x27;mail&#x27;."]
    assert client.post("/tasks/bulk", action="cancel", status="pending", since="1h")[0] == 303
    assert env.statuses([*mail, *waiting]) == dict.fromkeys([*mail, *waiting], "cancelled")
    assert client.post("/tasks/bulk", action="retry", status="succeeded")[0] == 400
    assert client.post("/tasks/bulk", action="delete")[0] == 400
    nothing = client.get("/tasks/bulk", action="retry", key="nothing").body.decode()
    assert "No failed or cancelled task matches key &#x27;nothing&#x27;" in nothing


def test_single_actions_pause_resume_run_now_and_purge(env: Env) -> None:
    job = Schedule("nightly", "record", "reports", 3, '{"n":42}', 5, cron="0 3 * * *")
    client = Client.signed_in(env, (job,))
    pending = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {}, delay=3600)
    done = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {})
    env.set_columns(done, status="succeeded", finished_at="2000-01-01 00:00:00")

    assert client.post(f"/tasks/{pending}/cancel", next="/workers") == (303, "/workers")
    assert client.notices("/workers") == [f"Cancelled task {pending} (it was pending)."]
    assert client.post(f"/tasks/{pending}/cancel")[0] == 303
    assert client.notices() == [f"Task {pending} was already cancelled: not cancelled."]
    status, body = client.post(f"/tasks/{done}/retry")
    assert status == 409 and "only failed or cancelled" in body

    mail = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {}, queue="mail")
    assert client.post("/queue/pause", name="mail", reason="the SMTP relay is down") == (303, "/queue?name=mail")
    assert env.store.lease("test:1.0:x", ["mail"], 10, 30) == []  # every lease obeys the pause
    page = client.get("/queues").body.decode()
    row = next(row for row in page.split("<tr>") if ">mail<" in row)
    assert "paused" in row and "by dashboard" in row and "the SMTP relay is down" in row and "Resume" in row
    assert client.post("/queue/pause", name="mail")[0] == 303
    assert client.notices() == ["Queue &#x27;mail&#x27; was already paused: nothing changed."]
    assert client.post("/queue/resume", name="mail", next="/queues") == (303, "/queues")
    assert [task.id for task in env.store.lease("test:1.0:x", ["mail"], 10, 30)] == [mail]
    assert client.post("/queue/pause", name="\x00")[0] == 400

    assert client.post("/periodic/run", name="nightly") == (303, "/queues")
    (notice,) = client.notices("/queues")
    ran = int(notice.rpartition("task ")[2].rstrip("."))
    row = env.store.get(ran)
    assert row is not None and (row["key"], row["queue"], row["priority"], row["args"], row["max_attempts"],
                                row["dedupe_key"], row["status"]) == ("record", "reports", 3, '{"n":42}', 5, None,
                                                                      "pending")
    assert client.post("/periodic/run", name="hourly")[0] == 400

    assert client.post("/purge", older_than="1d", status="succeeded") == (303, "/tasks")
    assert client.notices() == ["Purged 1 finished task(s)."] and env.store.get(done) is None
    assert client.post("/purge", older_than="soon")[0] == 400
    assert client.post("/purge", older_than="1d", status="pending")[0] == 400


# -- pages ---------------------------------------------------------------------------------------------
def test_queue_workers_group_chain_and_search_pages(env: Env, monkeypatch: Any) -> None:
    env = env.with_plugins(monkeypatch, "tests.handlers.tasks,tests.handlers.workflow_tasks")
    job = Schedule("tick", "record", "default", 0, "{}", 3, every=60)
    client = Client.signed_in(env, (job,))
    now = dt.datetime.now(dt.timezone.utc)
    slot = job.periodic.latest_slot(now)
    assert slot is not None
    ran = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {}, dedupe_key=job.periodic.dedupe_key(slot[0]))
    gta_core.limit_queue("mail", concurrency=4, rate_limit="100/m")
    running = gta_core.submit(gta_core.OWN_TRANSACTION, "greet", {"name": "ada@example.com"}, queue="mail")
    env.set_columns(running, status="running", lease_owner=OWNER, started_at=env.store._moment(now),
         lease_expires_at=env.store._moment(now + dt.timedelta(seconds=30)))
    made = gta_core.group(gta_core.OWN_TRANSACTION, [gta_core.TaskRequest("square", {"n": n}) for n in range(3)],
                          on_complete=gta_core.TaskRequest("collect", {}))

    queues = client.get("/queues").body.decode()
    mail_row = next(row for row in queues.split("<tr>") if ">mail<" in row)
    assert "1/4 running" in mail_row and "100/m starts" in mail_row and 'action="/queue/pause"' in mail_row
    tick_row = next(row for row in queues.split("<tr>") if "<td>tick</td>" in row)
    assert f'href="/tasks/{ran}"' in tick_row and "every 60s" in tick_row and 'action="/periodic/run"' in tick_row
    queue = client.get("/queue", name="default").body.decode()
    assert "tests.handlers.tasks" in queue and "Pause or resume" in queue and 'name="reason"' in queue
    assert client.get("/queue").status == 400

    workers = client.get("/workers").body.decode()
    assert "Supervisor 777 on host-b" in workers and f'action="/tasks/{running}/cancel"' in workers
    assert f'aria-label="Cancel task {running}"' in workers

    group = client.get(f"/groups/{made.groups[0]}").body.decode()
    assert group.count("<td>square</td>") == 3 and "0 of 3 members final (3 pending)" in group
    assert f'href="/tasks/{made.callback}"' in group and "waiting" in group
    steps = gta_core.chain(gta_core.OWN_TRANSACTION, [gta_core.TaskRequest("add", {}) for _ in range(4)])
    for link in steps.groups:  # from any link, every step in order
        page = client.get(f"/groups/{link}").body.decode()
        assert re.findall(r'href="/tasks/(\d+)"', page) == [str(step) for step in steps.ids], page
    assert client.get("/groups/999999").status == 404

    def search(text: str) -> str:
        reply = client.get("/search", q=text)
        assert reply.status == 303
        return dict(reply.headers)["Location"]

    assert search(f" {running} ") == f"/tasks/{running}"
    assert search("record") == "/tasks?key=record"  # a key of this supervisor's handlers
    assert search("django:app.mail.send") == "/tasks?key=django%3Aapp.mail.send"  # in a family of keys
    assert search("ada@example.com") == "/tasks?args=ada%40example.com"
    found = client.get("/tasks", args="ada@example.com").body.decode()
    assert re.findall(r'<td class="num"><a href="/tasks/(\d+)"', found) == [str(running)]
    named = client.get("/tasks", args="name=ada@example.com").body.decode()
    assert re.findall(r'<td class="num"><a href="/tasks/(\d+)"', named) == [str(running)]


def test_read_only_and_signed_out_viewers_see_no_action_button(env: Env) -> None:
    failed = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {})
    env.set_columns(failed, status="failed", last_error="ValueError: x")
    for token in ("", dashboard_client.TOKEN):
        viewer = Client(Dashboard(env.runtime.settings.replace(dashboard_token=token)))
        for path in ("/", "/queues", "/queue?name=default", "/workers", "/tasks", f"/tasks/{failed}",
                     "/tasks/bulk?action=retry"):
            page_path, _, query = path.partition("?")
            body = viewer.get(page_path, **dict(pair.split("=") for pair in query.split("&") if pair)).body.decode()
            assert 'method="post"' not in body and "<button" in body, path  # the search's button only
            assert ("Sign in" in body) == bool(token), path


# -- live updates -------------------------------------------------------------------------------------
def test_live_updates_send_only_the_parts_that_changed(env: Env) -> None:
    client = Client.signed_in(env)
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {})
    page = client.get(f"/tasks/{task_id}").body.decode()
    assert f'data-live="/live/tasks/{task_id}"' in page
    held = dict(re.findall(r'data-part="(\w+)" data-digest="(\w+)"', page))
    assert set(held) == {"summary", "timeline", "children"}
    header = {"X-Gta-Parts": ",".join(f"{name}={digest}" for name, digest in held.items())}

    unchanged = json.loads(client.get(f"/live/tasks/{task_id}", header).body)
    assert unchanged["parts"] == {} and unchanged["digests"] == held and unchanged["every"] == 3000
    env.set_columns(task_id, status="succeeded", started_at="2026-01-01 00:00:00", finished_at="2026-01-01 00:00:02")
    changed = json.loads(client.get(f"/live/tasks/{task_id}", header).body)
    assert "summary" in changed["parts"] and "children" not in changed["parts"]  # the timeline too, with its log
    assert "succeeded" in changed["parts"]["summary"]
    assert "ran 2.0s" in changed["parts"]["summary"]
    assert client.get("/live/tasks/99999999").status == 404
    assert client.get("/live/nowhere").status == 404

    listing = client.get("/tasks").body.decode()
    live = re.search(r'data-live="([^"]+)"', listing)
    assert live is not None
    url = live[1].replace("&amp;", "&")
    assert url == f"/live/tasks?ids={task_id}&top={task_id}"
    newer = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {})
    env.set_columns(task_id, status="failed", last_error="KeyError: 'x'\n\nTraceback (most recent call last): …")
    path, _, query = url.partition("?")
    update = json.loads(client.get(path, **dict(pair.split("=") for pair in query.split("&"))).body)
    assert "1 newer matching task(s)" in update["parts"]["newer"]
    assert "KeyError: &#x27;x&#x27;" in update["parts"]["rows"] and "Traceback" not in update["parts"]["rows"]
    assert f"/tasks/{newer}" not in update["parts"]["rows"]  # announced, not inserted
    assert client.get("/live/tasks", ids=",".join(["1"] * 101)).status == 400

    for path in ("/", "/queues", "/workers", "/queue"):
        reply = client.get("/live" + path, **({"name": "default"} if path == "/queue" else {}))
        assert reply.status == 200 and json.loads(reply.body)["parts"], path


# -- history and charts ------------------------------------------------------------------------------------
def test_history_keeps_24_hours_by_minute_and_folds_queues_beyond_the_cap() -> None:
    readings = iter([
        Reading(60 * 1000 + 30, [(1000, "a", "succeeded", 4), (1000, "b", "failed", 1), (999, "a", "cancelled", 7)],
                [(1000, "a", 1.0), (1000, "a", 3.0), (1000, "b", 10.0)], {("a", "pending"): 5, ("b", "running"): 2}),
        Reading(60 * 1001 + 50, [(1001, "c", "succeeded", 2)], [], {("c", "pending"): 1}),
    ])
    recorded = History(lambda: next(readings), max_queues=2)
    assert recorded.chart() is None and recorded.recent() is None
    recorded.tick()
    recorded.tick()
    recorded.tick()  # a failed reading (StopIteration here) is skipped: a gap, the thread goes on
    chart = recorded.chart(ALL)
    assert chart is not None and chart.first == 1001 - history.MINUTES + 1
    last = {field: values[-2:] for field, values in chart.values.items()}
    assert last["succeeded"] == [4.0, 2.0] and last["failed"] == [1.0, None]  # cancelled is not charted
    assert last["pending"] == [5.0, 1.0] and last["running"] == [2.0, 0.0]
    assert last["wait_p50"] == [3.0, None] and last["wait_p95"] == [10.0, None]
    a = recorded.chart("a")
    assert a is not None and a.values["pending"][-2:] == [5.0, 0.0]  # emptied: a 0, not a gap
    other, c = recorded.chart(OTHER), recorded.chart("c")
    assert other is not None and c is not None
    assert other.values["succeeded"][-1] == 2.0 and c.values["succeeded"][-1] is None  # a third queue is folded
    recent = recorded.recent("a")
    assert recent is not None and recent.wait_p50 == 1.0 and recent.wait_p95 == 3.0 and recent.waits == 2
    assert math.isclose(recent.succeeded_per_minute, 4 / (4 + 48 / 60))


def test_history_reads_the_table(env: Env) -> None:
    ids = gta_core.submit_many(gta_core.OWN_TRANSACTION, [("record", {"n": n}) for n in range(4)])
    now = dt.datetime.now(dt.timezone.utc)
    for back, task_id in zip((3 * 3600, 600, 30), ids, strict=False):  # finished 3 h, 10 min and 30 s ago
        env.set_columns(task_id, status="succeeded", finished_at=env.store._moment(now - dt.timedelta(seconds=back)),
             started_at=env.store._moment(now - dt.timedelta(seconds=back + 1)),
             run_at=env.store._moment(now - dt.timedelta(seconds=back + 6)))
    reader = TableReader(DashboardReads(env.db_url, env.table))
    first = reader()
    assert sum(count for _, _, _, count in first.finished) == 3  # the first reading covers 24 hours
    assert sorted(round(wait) for _, _, wait in first.waits) == [5, 5, 5]  # and a sample of the day before
    assert first.depth == {("default", "pending"): 1, ("default", "running"): 0}
    assert reader().finished == []  # then only what finished since


def test_charts_are_inline_svg_with_their_numbers_in_words() -> None:
    values: dict[str, list[float | None]] = {field: [None] * history.MINUTES for field in history.FIELDS}
    values["succeeded"][-1], values["failed"][-1] = 10.0, 5.0
    values["pending"][-3:] = [4.0, None, 8.0]
    first = 1_000_000 - history.MINUTES + 1
    day = charts.day(history.Chart(first, values, recorded_since=1_000_000 - 2))
    assert day.count("<svg") == 3 and day.count('role="img"') == 3
    assert "10 succeeded and 5 failed in 24 h" in day
    assert "pending peak 8, running" not in day and "pending peak 8;" in day  # running never recorded
    assert 'class="line pending"' in day and "nothing recorded yet" in day  # the waits
    grid = charts.columns(history.Chart(first, values, None), ("pending",), rate=False)
    assert grid.first % charts.BUCKET == 0 and grid.values["pending"][-1] == 8.0
    assert charts.day(None).startswith("<p")


def test_a_fresh_reading_is_shared_until_it_is_a_second_old_or_forgotten() -> None:
    now = [0.0]
    taken: list[float] = []
    fresh = Fresh(lambda: taken.append(now[0]) or len(taken), 1.0, clock=lambda: now[0])
    assert [fresh(), fresh()] == [1, 1]
    now[0] = 0.99
    assert fresh() == 1
    now[0] = 1.0
    assert fresh() == 2
    fresh.forget()
    assert fresh() == 3 and taken == [0.0, 1.0, 1.0]


# -- the catalog ---------------------------------------------------------------------------------------------
def test_catalog_round_trips_and_a_missing_one_is_empty(tmp_path: Any) -> None:
    made = Catalog((Handler("send", "mail", 2, 5, 30.0, True, "app", 4, "10/s"),),
                   (Schedule("digest", "send", "mail", 2, '{"to":"ops"}', 5, cron="0 8 * * 1"),))
    assert catalog.read(tmp_path) == Catalog()
    catalog.write(made, tmp_path)
    assert catalog.read(tmp_path) == made
    (schedule,) = made.schedules
    assert schedule.text == "cron 0 8 * * 1" and schedule.run_now().dedupe_key is None
    assert schedule.periodic.next_slot(dt.datetime(2026, 3, 5, tzinfo=dt.timezone.utc)) == \
        dt.datetime(2026, 3, 9, 8, tzinfo=dt.timezone.utc)
    assert made.of_queue("mail") == (list(made.handlers), list(made.schedules))


def test_argument_search_text() -> None:
    assert args_fragment("bob@example.com") == "bob@example.com"
    assert args_fragment('say "hi" é') == 'say \\"hi\\" \\u00e9'  # as json.dumps stores it
    assert args_fragment("n=5") == '"n":5' and args_fragment("to=bob") == '"to":"bob"'
    assert args_fragment('tags=["a", "b"]') == '"tags":["a","b"]' and args_fragment("=x") == "=x"


@pytest.mark.parametrize("backend", [only_on("postgres")])
def test_live_statements_stay_on_indexes(env: Env) -> None:
    """What a live update reads can walk an index (the primary key, finished, pending or running
    rows) instead of the whole table, so its cost holds as the table grows. (With sequential
    scans off: on a table this small the planner may prefer one, and whether it can use an
    index-only scan depends on what other sessions hold open.)"""
    ids = gta_core.submit_many(gta_core.OWN_TRANSACTION, [("record", {"n": n}) for n in range(20_000)])
    env.runtime.db.execute_sql(f"UPDATE {env.table} SET status = 'succeeded', started_at = created_at - INTERVAL "
                               "'1 hour', finished_at = created_at - INTERVAL '1 hour' WHERE MOD(id, 50) <> 0")
    env.runtime.db.execute_sql(f"ANALYZE {env.table}")
    reads = DashboardReads(env.db_url, env.table)
    plans: list[str] = []
    execute = reads.db.execute_sql

    def explained(sql: str, params: Any = (), *args: Any, **kwargs: Any) -> Any:
        if sql.lstrip().upper().startswith("SELECT") and env.table in sql:
            plans.append(" ".join(str(row[0]) for row in execute("EXPLAIN " + sql, params).fetchall()))
        return execute(sql, params, *args, **kwargs)

    now = dt.datetime.now(dt.timezone.utc)
    with reads.session():
        reads.db.execute_sql("SET enable_seqscan = off")
        reads.db.execute_sql = explained  # type: ignore[method-assign]
        reads.queue_depth()
        reads.supervisors()
        reads.running_tasks()
        reads.rows(ids[-50:])
        reads.newer(Filters(status="failed"), ids[-50], 10_000)
        reads.finished_counts(now - dt.timedelta(seconds=10), now)
        reads.wait_samples(now - dt.timedelta(seconds=10), now, 500)
        reads.periodic_runs(["periodic:tick:1", "periodic:tick:2"])
        reads.db.execute_sql = execute  # type: ignore[method-assign]
    scans = [plan for plan in plans if re.search(rf"Seq Scan on {env.table}\b", plan)]
    assert len(plans) >= 10 and not scans, plans
