"""The dashboard in a real browser: headless Chromium (the Debian package), driven by
Playwright's Python package against a live supervisor's sidecar.

An operator opens the overview, filters to failed tasks, opens one, and retries it: refused
without the token (nothing changes), done with it (the task then succeeds). Values written
by task authors (args, errors) carry HTML and script that must stay inert. A screenshot of
every page is written under the test's tmp dir (``screenshots/``).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import gta_core

from . import dashboard_client
from .conftest import only_on
from .helpers import Env, wait_for

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
    would show one) and dismissed."""
    context = browser.new_context(timezone_id="Europe/Paris", viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.dialogs = []
    tab.on("dialog", lambda dialog: (tab.dialogs.append(dialog.message), dialog.dismiss()))
    try:
        yield tab
    finally:
        context.close()


def _supervisor_row(tab: Any, reload: bool = False) -> str:
    if reload:
        tab.reload()
    return str(tab.locator("table").nth(2).locator("tbody tr").first.inner_text())


def _inert(tab: Any) -> None:
    assert tab.evaluate("typeof window.pwned") == "undefined"
    assert tab.dialogs == []


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
    assert page.locator("svg.chart").count() == 1
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
    rows = page.locator("tbody tr")
    assert rows.count() == 1 and "failed" in rows.first.inner_text()
    assert "<script>window.pwned=1</script>" in rows.first.inner_text()  # shown as text
    _inert(page)
    page.screenshot(path=str(shots / "tasks.png"), full_page=True)

    page.click(f"a[href='/tasks/{failing}']")
    page.wait_for_url(f"**/tasks/{failing}")
    created = page.locator("time").first
    assert not created.inner_text().endswith("UTC")  # rewritten in the viewer's zone (Paris)
    assert created.get_attribute("title", timeout=5000) is not None and created.get_attribute("title").endswith("UTC")
    assert "<script>window.pwned=1</script>" in page.locator("pre.json").first.inner_text()  # JSON-quoted
    assert HOSTILE in page.locator("ol li").first.inner_text()
    _inert(page)
    page.screenshot(path=str(shots / "task.png"), full_page=True)

    # Without the token: the button is disabled; forced anyway, the server refuses and nothing changes.
    retry = page.locator("form[action$='/retry'] button")
    assert retry.is_disabled()
    retry.evaluate("button => button.disabled = false")
    retry.click()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "Refused"
    page.screenshot(path=str(shots / "refused.png"), full_page=True)
    assert env.statuses([failing]) == {failing: "failed"}

    # With it: sign in, retry, and the task (its flag gone) succeeds.
    flag.unlink()
    page.goto(f"{server.base}/signin?next=/tasks/{failing}")
    page.fill("input[name=token]", dashboard_client.TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(f"**/tasks/{failing}?done=signed-in")
    page.click("form[action$='/retry'] button")
    page.wait_for_url(f"**/tasks/{failing}?done=retried")
    assert "Retried" in page.locator("p.notice").inner_text()
    wait_for(lambda: env.statuses([failing]) == {failing: "succeeded"}, what="the retried task to succeed")
    page.reload()
    assert page.locator(".status-succeeded").first.inner_text() == "succeeded"
    _inert(page)
    page.screenshot(path=str(shots / "retried.png"), full_page=True)

    assert sorted(path.name for path in shots.iterdir()) == ["overview.png", "refused.png", "retried.png",
                                                             "task.png", "tasks.png"]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_cross_site_form_cannot_act_even_for_a_signed_in_browser(env: Env, page: Any, tmp_path: Path) -> None:
    """Another site's page that posts to the dashboard: the browser holds the session, but the
    request lacks the CSRF value and comes from another site, so it is refused."""
    server = dashboard_client.start(env)
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {}, delay=3600)
    page.goto(f"{server.base}/signin")
    page.fill("input[name=token]", dashboard_client.TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url("**/?done=signed-in")
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
        page.wait_for_url(f"{server.base}/?done=signed-in")
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
