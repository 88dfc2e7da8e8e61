"""The dashboard in a real browser: headless Chromium (the Debian package), driven by
Playwright's Python package against a live supervisor's sidecar.

An operator opens the overview, filters to failed tasks, opens one, and retries it: refused
without the token (nothing changes), done with it (the task then succeeds). Values written
by task authors (args, errors) carry HTML and script that must stay inert. A screenshot of
every page is written under the test's tmp dir (``screenshots/``).
"""
from __future__ import annotations

import datetime as dt
import math
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import gta_core

from ..support import dashboard_client
from ..support.backends import only_on
from ..support.helpers import Env, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--host-resolver-rules=MAP rebind.test 127.0.0.1",  # a name an attacker rebound to loopback
                 # Chromium's own Private Network Access checks would stop a rebound page's fetch
                 # before it reaches the sidecar; other browsers have none, so the sidecar must
                 "--disable-features=BlockInsecurePrivateNetworkRequests,PrivateNetworkAccessSendPreflights,"
                 "LocalNetworkAccessChecks"]
HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="needs the Debian package chromium (scripts/prerequisites.txt)")


@pytest.fixture
def browser() -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api", reason="needs pip playwright (the test extra)")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A page in Paris time whose every dialog is recorded (a script run by an injected value
    would show one) and dismissed, or accepted once a test sets ``tab.accept_dialogs``."""
    context = browser.new_context(timezone_id="Europe/Paris", viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.dialogs = []
    tab.accept_dialogs = False
    tab.on("dialog", lambda dialog: (tab.dialogs.append(dialog.message),
                                     dialog.accept() if tab.accept_dialogs else dialog.dismiss()))
    try:
        yield tab
    finally:
        context.close()


def _supervisor_row(tab: Any, reload: bool = False) -> str:
    if reload:
        tab.reload()
    return str(tab.locator("[data-part=supervisor] tbody tr").first.inner_text())


def _inert(tab: Any) -> None:
    assert tab.evaluate("typeof window.pwned") == "undefined"
    assert tab.dialogs == []


def _sign_in(tab: Any, server: dashboard_client.DashboardServer, next_path: str = "/") -> None:
    tab.goto(f"{server.base}/signin?next={next_path}")
    tab.fill("input[name=token]", dashboard_client.TOKEN)
    tab.click("form.signin button")
    tab.wait_for_url(f"{server.base}{next_path}")
    assert "Signed in" in tab.locator("p.notice").inner_text()


def _expect(locator: Any) -> Any:
    """Playwright's auto-retrying assertion (no script evaluated in the page: its CSP forbids eval)."""
    from playwright.sync_api import expect
    return expect(locator)


def _notice(tab: Any) -> str:
    return str(tab.locator("main p.notice").inner_text())


def _listed(tab: Any) -> list[int]:
    """The task ids of the list on screen."""
    return [int(text) for text in tab.locator("[data-part=rows] tbody td.num a").all_inner_texts()]


@pytest.mark.parametrize("backend", ["sqlite", only_on("postgres")])
def test_operator_filters_opens_and_retries_a_failed_task(env: Env, page: Any, tmp_path: Path) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    flag = tmp_path / "flag"
    flag.touch()
    server = dashboard_client.start(env)
    done = gta_core.submit_many(gta_core.OWN_TRANSACTION, [("record", {"n": n}) for n in range(5)])
    failing = gta_core.submit(gta_core.OWN_TRANSACTION, "fails_while_flag", {"flag": str(flag), "message": HOSTILE})
    env.wait_final([*done, failing])

    page.goto(f"{server.base}/")
    assert page.locator("h1").inner_text() == "Overview"
    assert page.locator("svg.chart").count() == 3
    assert f"\t{server.process.pid}\t" in _supervisor_row(page)
    # the supervisor rewrites its status file within a main-loop pass of a change (0.25 s); on a
    # loaded machine that pass may come late, so the page is read again for a few seconds
    wait_for(lambda: "\t1/1\t" in _supervisor_row(page, reload=True), 5.0,
             "the overview to show the supervisor's worker live", interval=0.25)
    assert " died" not in server.process.log(), server.process.log()  # live because never restarted
    page.wait_for_function("document.querySelector('.cards') !== null")
    page.screenshot(path=str(shots / "overview.png"), full_page=True)

    page.click("a[href='/tasks?status=failed']")
    page.wait_for_url("**/tasks?status=failed")
    rows = page.locator("[data-part=rows] tbody tr")
    assert rows.count() == 1 and "failed" in rows.first.inner_text()
    assert "Fail: <script>window.pwned=1</script>" in rows.first.inner_text()  # the error's first line, as text
    _inert(page)
    page.screenshot(path=str(shots / "tasks.png"), full_page=True)

    page.click(f"a[href='/tasks/{failing}']")
    page.wait_for_url(f"**/tasks/{failing}")
    assert page.locator("main .headline .status").inner_text() == "failed"  # status first
    created = page.locator("dl.facts time").first
    assert not created.inner_text().endswith("UTC")  # rewritten in the viewer's zone (Paris)
    assert created.get_attribute("title", timeout=5000) is not None and created.get_attribute("title").endswith("UTC")
    assert "<script>window.pwned=1</script>" in page.locator("pre.json").first.inner_text()  # JSON-quoted
    assert HOSTILE in page.locator("ol li").first.inner_text()
    _inert(page)
    page.screenshot(path=str(shots / "task.png"), full_page=True)

    # Without signing in: no button; a form posted anyway is refused and nothing changes.
    assert page.locator("form[action$='/retry']").count() == 0
    assert "Sign in" in page.locator("main .hint").inner_text()
    with page.expect_navigation():
        page.evaluate("""path => { const form = document.createElement('form'); form.method = 'post';
                                   form.action = path; document.body.append(form); form.submit(); }""",
                      f"/tasks/{failing}/retry")
    assert page.locator("h1").inner_text() == "Refused"
    page.screenshot(path=str(shots / "refused.png"), full_page=True)
    assert env.statuses([failing]) == {failing: "failed"}

    # Signed in: retry, and the task (its flag gone) succeeds; the notice shows once.
    flag.unlink()
    _sign_in(page, server, f"/tasks/{failing}")
    with page.expect_navigation():
        page.click("form[action$='/retry'] button")
    assert _notice(page) == f"Retried task {failing}: it is pending again."
    wait_for(lambda: env.statuses([failing]) == {failing: "succeeded"}, what="the retried task to succeed")
    page.reload()
    assert page.locator("main .headline .status").inner_text() == "succeeded"
    assert page.locator("main p.notice").count() == 0  # a reload does not show it again
    _inert(page)
    page.screenshot(path=str(shots / "retried.png"), full_page=True)

    assert sorted(path.name for path in shots.iterdir()) == ["overview.png", "refused.png", "retried.png",
                                                             "task.png", "tasks.png"]


@pytest.mark.parametrize("backend", ["sqlite", only_on("postgres")])
def test_pause_and_resume_a_queue_from_the_ui_and_the_lease_obeys(env: Env, page: Any) -> None:
    server = dashboard_client.start(env, settings={"GTA_QUEUES": "default,mail"})
    _sign_in(page, server, "/queue?name=mail")
    page.fill("input[name=reason]", "the SMTP relay is down")
    with page.expect_navigation():
        page.click("form[action='/queue/pause'] button")
    assert _notice(page).startswith("Paused queue 'mail'")
    assert page.locator("[data-part=facts] td").first.inner_text().startswith("paused")

    mail = gta_core.submit_many(gta_core.OWN_TRANSACTION, [gta_core.TaskRequest("record", {"n": n}, queue="mail")
                                                           for n in range(3)])
    other = gta_core.submit_many(gta_core.OWN_TRANSACTION, [("record", {"n": n}) for n in range(3)])
    env.wait_final(other)  # leased (each lease asks for both queues), run and recorded meanwhile
    time.sleep(1.0)
    assert env.statuses(mail) == dict.fromkeys(mail, "pending")

    page.click("nav a[href='/queues']")
    row = page.locator("[data-part=queues] tr", has_text="the SMTP relay is down")
    assert "paused" in row.inner_text() and "by dashboard" in row.inner_text()
    row.locator("form[action='/queue/resume'] button").click()
    page.wait_for_url("**/queue?name=mail")
    assert _notice(page) == "Resumed queue 'mail': its due tasks start again."
    assert env.wait_final(mail) == dict.fromkeys(mail, "succeeded")
    _expect(page.locator("[data-part=facts] td").first).to_have_text("active")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_bulk_retry_of_the_failed_tasks_of_one_queue(env: Env, page: Any, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    flag.touch()
    server = dashboard_client.start(env, settings={"GTA_QUEUES": "default,mail"})
    mail = gta_core.submit_many(gta_core.OWN_TRANSACTION, [
        gta_core.TaskRequest("fails_while_flag", {"flag": str(flag)}, queue="mail") for _ in range(2)])
    other = gta_core.submit_many(gta_core.OWN_TRANSACTION, [("fails_while_flag", {"flag": str(flag)})] * 2)
    env.wait_final([*mail, *other])
    flag.unlink()

    _sign_in(page, server, "/tasks")
    page.select_option("select[name=status]", "failed")
    page.fill("input[name=queue]", "mail")
    page.click("form.filters button")
    page.wait_for_url("**/tasks?status=failed&queue=mail**")
    assert sorted(_listed(page)) == mail
    page.click("a.button[href^='/tasks/bulk?action=retry']")
    assert page.locator("p.summary").inner_text() == "2 failed task(s) match status 'failed', queue 'mail'."
    page.click("form[action='/tasks/bulk'] button")
    page.wait_for_url("**/tasks?status=failed&queue=mail")
    assert _notice(page) == "Retried 2 task(s) matching status 'failed', queue 'mail'."
    assert env.wait_final(mail) == dict.fromkeys(mail, "succeeded")
    assert env.statuses(other) == dict.fromkeys(other, "failed")
    assert page.locator("[data-part=rows]").inner_text() == "no matching tasks"  # none failed in mail now


@pytest.mark.parametrize("backend", ["sqlite", only_on("postgres")])
def test_cancel_a_running_task_from_the_workers_page(env: Env, page: Any) -> None:
    server = dashboard_client.start(env)
    _sign_in(page, server, "/workers")
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "sleepy", {"seconds": 30})
    cancel = page.locator(f"form[action='/tasks/{task_id}/cancel'] button")
    cancel.wait_for(timeout=30_000)  # shown by a live update: the page was opened before the task ran
    assert cancel.get_attribute("aria-label") == f"Cancel task {task_id}"
    page.accept_dialogs = True
    with page.expect_navigation():
        cancel.click()
    assert page.dialogs == [f"Cancel running task {task_id}?"]
    assert _notice(page) == f"Cancelled task {task_id} (it was running)."
    assert env.statuses([task_id]) == {task_id: "cancelled"}
    assert page.locator(f"a[href='/tasks/{task_id}']").count() == 0


@pytest.mark.parametrize("backend", ["sqlite"])
def test_search_by_an_argument_value(env: Env, page: Any) -> None:
    server = dashboard_client.start(env, token=None)
    ada, bob = gta_core.submit_many(gta_core.OWN_TRANSACTION, [("greet", {"name": "ada@example.com"}),
                                                               ("greet", {"name": "bob@example.com"})])
    gta_core.submit_many(gta_core.OWN_TRANSACTION, [("record", {"n": n}) for n in range(5)])
    page.goto(f"{server.base}/")
    page.fill("#search-q", "ada@example.com")
    page.press("#search-q", "Enter")
    page.wait_for_url("**/tasks?args=ada%40example.com")
    assert _listed(page) == [ada]
    page.fill("input[name=args]", "name=bob@example.com")
    page.click("form.filters button")
    page.wait_for_url("**/tasks?**args=name%3Dbob%40example.com**")
    assert _listed(page) == [bob]
    page.fill("#search-q", str(ada))
    page.press("#search-q", "Enter")
    page.wait_for_url(f"**/tasks/{ada}")


@pytest.mark.parametrize("backend", ["sqlite", only_on("postgres")])
def test_pages_update_on_their_own_when_a_task_finishes(env: Env, page: Any) -> None:
    server = dashboard_client.start(env)
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "sleepy", {"seconds": 2})
    page.goto(f"{server.base}/tasks/{task_id}")
    page.evaluate("window.notReloaded = true")
    assert page.locator("main .headline .status").inner_text() in ("pending", "running")
    _expect(page.locator("main .headline .status")).to_have_text("succeeded", timeout=30_000)
    assert page.evaluate("window.notReloaded") is True
    assert "ran 2." in page.locator("dl.facts").inner_text()
    assert "live: updated" in page.locator(".live-state").inner_text()

    listed = gta_core.submit(gta_core.OWN_TRANSACTION, "sleepy", {"seconds": 2})
    page.goto(f"{server.base}/tasks")
    page.evaluate("window.notReloaded = true")
    row = page.locator("[data-part=rows] tr", has=page.locator(f"a[href='/tasks/{listed}']"))
    _expect(row.locator(".status")).to_have_text("succeeded", timeout=30_000)
    newer = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {})
    _expect(page.locator("[data-part=newer]")).to_contain_text("1 newer matching task", timeout=30_000)
    assert page.evaluate("window.notReloaded") is True
    with page.expect_navigation():
        page.click("[data-part=newer] a")
    assert _listed(page)[0] == newer


@pytest.mark.parametrize("backend", ["sqlite", only_on("postgres")])
def test_the_attempt_timeline_of_a_task_that_failed_twice(env: Env, page: Any) -> None:
    pytest.importorskip("gta_core.attempts", reason="the timeline reads the attempt log of issue 30, not merged yet")
    server = dashboard_client.start(env)
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "flaky", {"failures": 2})
    assert env.wait_final([task_id]) == {task_id: "succeeded"}
    page.goto(f"{server.base}/tasks/{task_id}")
    assert page.locator("main .headline .status").inner_text() == "succeeded"
    assert "3 of 4" in page.locator("dl.facts").inner_text()
    rows = page.locator("[data-part=timeline] tbody tr")
    assert rows.count() == 3
    cells = [row.locator("td").all_inner_texts() for row in rows.all()]
    assert [(number, outcome) for number, outcome, *_ in cells] == [("1", "retried"), ("2", "retried"),
                                                                    ("3", "succeeded")]
    for attempt, cell in enumerate(cells[:2], start=1):
        worker, then, error = cell[4], cell[5], cell[6]
        assert worker.startswith(f"{socket.gethostname()}:{server.process.pid}.0:")
        assert then.startswith("retry in ") and error == f"builtins.RuntimeError: flaky failure on attempt {attempt}"
    traceback = page.locator("[data-part=timeline] details").first
    assert not traceback.locator("pre").is_visible()  # folded under its error
    traceback.locator("summary").click()
    assert 'raise RuntimeError(f"flaky failure on attempt {ctx.attempt}")' in traceback.locator("pre").inner_text()
    assert cells[2][6] == "" and cells[2][3].endswith("s")  # the success: its duration, no error


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_cross_site_form_cannot_act_even_for_a_signed_in_browser(env: Env, page: Any, tmp_path: Path) -> None:
    """Another site's page that posts to the dashboard: the browser holds the session, but the
    request lacks the CSRF value and comes from another site, so it is refused."""
    server = dashboard_client.start(env)
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {}, delay=3600)
    _sign_in(page, server)
    evil = tmp_path / "evil.html"
    evil.write_text(f'<form method="post" action="{server.base}/tasks/{task_id}/cancel">'
                    '<input name="csrf" value="guess"><button>win a prize</button></form>')
    page.goto(evil.as_uri())
    page.click("button")
    page.wait_for_load_state()
    assert "Refused" in page.content()
    assert env.statuses([task_id]) == {task_id: "pending"}


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_crafted_next_link_can_neither_set_a_cookie_nor_leave_the_site(env: Env, page: Any) -> None:
    """Signing in from a link whose ``next`` smuggles a header, or a tab that browsers drop
    (``/\t/evil.example`` is ``//evil.example``, another site), lands on the overview."""
    server = dashboard_client.start(env)
    for crafted in ("/%0d%0aSet-Cookie:%20injected=pwned;%20Path=/", "/%09/evil.example", "/%0a/evil.example"):
        page.goto(f"{server.base}/signin?next={crafted}")
        page.fill("input[name=token]", dashboard_client.TOKEN)
        page.click("form.signin button")
        page.wait_for_url(f"{server.base}/")
        assert [cookie["name"] for cookie in page.context.cookies()] == ["gta_dashboard"], crafted


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_page_on_a_rebound_name_cannot_read_the_dashboard_or_metrics(env: Env, page: Any) -> None:
    """DNS rebinding: a script served as http://rebind.test:PORT/ (the attacker's page, here
    handed to the browser by Playwright) whose name then resolves to 127.0.0.1 reads
    same-origin URLs that reach the sidecar, which refuses that Host."""
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "greet", {"name": "private-arg-0451"}, delay=3600)
    server = dashboard_client.start(env)
    rebound = f"http://rebind.test:{server.port}"
    page.route(f"{rebound}/attack.html", lambda route: route.fulfill(body="<p>win a prize</p>",
                                                                      content_type="text/html"))
    page.goto(f"{rebound}/attack.html")
    read = "path => fetch(path).then(r => r.text().then(text => [r.status, text]))"
    for path in (f"/tasks/{task_id}", "/metrics", "/healthz", "/"):
        status, text = page.evaluate(read, path)
        assert status == 400 and "private-arg" not in text and "gta_" not in text, (path, status, text[:200])
    assert page.goto(f"{rebound}/tasks/{task_id}").status == 400
    page.goto(f"http://localhost:{server.port}/tasks/{task_id}")  # a name of this host: served
    assert "private-arg-0451" in page.content()


# -- every page, for the docs ------------------------------------------------------------------------------
#: the accessibility rules every page keeps, checked in the page: each field and button has an
#: accessible name, each chart a text alternative, one h1, and the first Tab lands on the skip link
A11Y = """() => {
  const named = element => (element.getAttribute('aria-label') || '').trim() ||
    (element.id && document.querySelector(`label[for="${element.id}"]`)) || element.closest('label') ||
    (element.tagName === 'BUTTON' && element.innerText.trim());
  const fields = [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')];
  return {unnamed: fields.filter(element => !named(element)).map(element => element.outerHTML),
          charts: [...document.querySelectorAll('svg')].filter(svg => !svg.getAttribute('aria-label')).length,
          h1: document.querySelectorAll('h1').length, lang: document.documentElement.lang};
}"""


def _seed_a_day(env: Env) -> None:
    """Tasks that finished over the last 24 hours, busier by day, a few failing, each having
    waited a little, for the throughput and time-in-queue charts."""
    now = dt.datetime.now(dt.timezone.utc)
    finished = [now - dt.timedelta(minutes=minute, seconds=second * 13)
                for minute in range(0, 24 * 60, 3) for second in range(1 + round(3 + 3 * math.sin(minute / 230)))]
    ids = gta_core.submit_many(gta_core.OWN_TRANSACTION, [("record", {"n": n}) for n in range(len(finished))])
    store = env.store
    with env.runtime.db.atomic():
        for index, (task_id, moment) in enumerate(zip(ids, finished, strict=True)):
            failed = index % 41 == 0
            started = moment - dt.timedelta(seconds=1)
            waited = (1.5 + math.sin(moment.timestamp() / 9000)) * (1 + index % 5 / 4)
            env.runtime.db.execute_sql(store._d.fix(
                f"UPDATE {env.table} SET status = ?, attempts = 1, run_at = ?, started_at = ?, finished_at = ?, "
                "last_error = ? WHERE id = ?"),
                ("failed" if failed else "succeeded", store._moment(started - dt.timedelta(seconds=waited)),
                 store._moment(started), store._moment(moment),
                 "TimeoutError: the warehouse did not answer" if failed else None, task_id))


@pytest.mark.parametrize("backend", ["sqlite"])
def test_every_page_is_accessible_and_pictured(env: Env, page: Any, tmp_path: Path, monkeypatch: Any) -> None:
    """Every page with realistic content, checked for the rules of `A11Y`; a screenshot of each
    goes to $GTA_DASHBOARD_SCREENSHOTS (docs/dashboard/ is made this way) or the tmp dir."""
    env = env.with_plugins(monkeypatch, "tests.handlers.tasks,tests.handlers.workflow_tasks")
    shots = Path(os.environ.get("GTA_DASHBOARD_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    _seed_a_day(env)
    gta_core.pause_queue("reports", reason="until the warehouse migration is over")
    gta_core.submit_many(gta_core.OWN_TRANSACTION, [gta_core.TaskRequest("record", {"n": n}, queue="reports")
                                                    for n in range(12)])
    failed = gta_core.submit(gta_core.OWN_TRANSACTION, "always_fails", {}, queue="mail")
    gta_core.submit_many(gta_core.OWN_TRANSACTION, [gta_core.TaskRequest("greet", {"name": f"user{n}@example.com"},
                                                                         queue="mail") for n in range(6)])
    made = gta_core.group(gta_core.OWN_TRANSACTION, [gta_core.TaskRequest("square", {"n": n, "pause": 0.2})
                                                     for n in range(6)],
                          on_complete=gta_core.TaskRequest("collect", {"label": "squares"}))
    server = dashboard_client.start(env, workers=2, settings={"GTA_QUEUES": "default,mail,reports",
                                                              "GTA_THREADS": "2", "GTA_DISABLE_PLUGINS": ""})
    running = gta_core.submit_many(gta_core.OWN_TRANSACTION, [("sleepy", {"seconds": 60, "n": n}) for n in range(3)])
    env.wait_final([failed])
    wait_for(lambda: env.statuses(running) == dict.fromkeys(running, "running"), what="three tasks running")
    _sign_in(page, server)
    tour = {"overview": "/", "queues": "/queues", "queue": "/queue?name=default", "workers": "/workers",
            "tasks": "/tasks?queue=mail", "task": f"/tasks/{failed}", "group": f"/groups/{made.groups[0]}",
            "bulk": "/tasks/bulk?action=retry&status=failed"}
    for name, path in tour.items():
        page.goto(f"{server.base}{path}")
        page.wait_for_load_state("networkidle")
        checked = page.evaluate(A11Y)
        assert checked == {"unnamed": [], "charts": 0, "h1": 1, "lang": "en"}, (path, checked)
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.className") == "skip", path
        page.mouse.click(1, 1)  # the skip link shown on focus is not part of the picture
        page.screenshot(path=str(shots / f"{name}.png"))
    _inert(page)
