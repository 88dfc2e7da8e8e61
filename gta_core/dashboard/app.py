"""The dashboard's routes: a request in, a `Response` out, independent of the HTTP server.

The sidecar hands every path other than ``/metrics`` and ``/healthz`` to `Dashboard.handle`
on the request's own thread (the sidecar's server is threaded), so a slow page never delays a
scrape or a probe.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

from .. import admin
from ..config import Settings, parse_duration
from ..errors import GTAError
from ..runtime import Runtime
from ..sql import FINAL_STATUSES
from . import pages
from .access import Guard, same_origin
from .queries import PAGE, DashboardReads, Filters, ReadTimeout
from .render import Markup, asset

log = logging.getLogger("gta.dashboard")

ASSETS = {"style.css": "text/css; charset=utf-8", "local-time.js": "text/javascript; charset=utf-8"}
#: no inline script, no third party, no framing: escaping is the first defence, this the second
SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
)
DONE = {  # the notice shown after an action (a fixed text: a link cannot put words on the page)
    "retried": "Retried: the task is pending again.",
    "cancelled": "Cancelled.",
    "signed-in": "Signed in: actions are allowed in this browser.",
    "signed-out": "Signed out.",
}
BULK_BATCH = 500
FORM_LIMIT = 64 * 1024
_TASK = re.compile(r"/tasks/(\d{1,19})")
_TASK_ACTION = re.compile(r"/tasks/(\d{1,19})/(retry|cancel)")


@dataclasses.dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    form: Mapping[str, str] = dataclasses.field(default_factory=dict)


class Refused(Exception):
    """An action the request may not take (HTTP 403, nothing changed)."""


class BadInput(Exception):
    """A malformed filter or form value (HTTP 400)."""


def parse_form(body: bytes) -> dict[str, str]:
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


class Dashboard:
    def __init__(self, settings: Settings, local: Callable[[], pages.LocalSupervisor | None] = lambda: None) -> None:
        self.settings = settings
        self.guard = Guard(settings.dashboard_token)
        self.reads = DashboardReads(settings.database_url, settings.table)
        self.runtime = Runtime(settings)  # actions write through the same code as the CLI
        self.local = local

    # -- entry -------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        viewer = self._viewer(request)
        try:
            if request.method == "POST":
                try:
                    return self._post(request)
                finally:
                    self.runtime.db.close()  # this request thread's connection: the thread ends next
            return self._get(request, viewer)
        except Refused as exc:
            return self._page(403, "Refused", Markup(""), viewer, f"Refused: {exc} Nothing was changed.", error=True)
        except BadInput as exc:
            return self._page(400, "Bad request", Markup(""), viewer, str(exc), error=True)
        except ReadTimeout as exc:
            return self._page(503, "Too slow", Markup(""), viewer,
                              f"{exc}: narrow the filter (status, queue, key or a recent time range).", error=True)
        except GTAError as exc:
            return self._page(409, "Not done", Markup(""), viewer, str(exc), error=True)

    def _viewer(self, request: Request) -> pages.Viewer:
        can_act = self.guard.signed_in(request.headers.get("Cookie"))
        return pages.Viewer(can_act, self.guard.enabled, self.guard.form_value() if can_act else "")

    def _page(self, status: int, title: str, body: Markup, viewer: pages.Viewer, notice: str | None = None,
              error: bool = False) -> Response:
        html = pages.page(title, body, viewer, self.settings.table, notice, error)
        return Response(status, html.encode(), headers=list(SECURITY_HEADERS))

    # -- reading ----------------------------------------------------------------------------------
    def _get(self, request: Request, viewer: pages.Viewer) -> Response:
        path = request.path.rstrip("/") or "/"
        notice = DONE.get(request.query.get("done", ""))
        if path == "/":
            return self._page(200, "Overview", self._overview(viewer), viewer, notice)
        if path == "/tasks":
            return self._page(200, "Tasks", self._tasks(request.query, viewer), viewer, _bulk_notice(request.query))
        if match := _TASK.fullmatch(path):
            task_id = int(match[1])
            with self.reads.session() as reads:
                task = reads.task(task_id)
                children = reads.children(task_id) if task else []
            if task is None:
                return self._page(404, f"Task {task_id}", Markup(""), viewer, f"no task with id {task_id}", error=True)
            return self._page(200, f"Task {task_id}", pages.task_detail(task, children, viewer), viewer, notice)
        if path == "/signin":
            return self._page(200, "Sign in", pages.signin(_local_path(request.query.get("next", "/"))), viewer)
        if path.startswith("/static/") and path[len("/static/"):] in ASSETS:
            name = path[len("/static/"):]
            return Response(200, asset(name), ASSETS[name], [("Cache-Control", "max-age=300"),
                                                             ("X-Content-Type-Options", "nosniff")])
        return self._page(404, "Not found", Markup(""), viewer, "No such page: try the overview, /metrics or /healthz.",
                          error=True)

    def _overview(self, viewer: pages.Viewer) -> Markup:
        with self.reads.session() as reads:  # each on an index: pending, running or finished_at rows
            finished = reads.finished_per_minute(pages.CHART_MINUTES)
            now = reads.now()
            oldest, unhandled = reads.pending(self.settings.initialized_timeout)
            running = reads.running_by_owner()
        counts: dict[tuple[str, str], int] | None = None
        try:  # reads every row: on a huge table it may run out of time, and the rest still shows
            with self.reads.session() as reads:
                counts = reads.counts()
        except ReadTimeout:
            pass
        return pages.overview(counts, finished, now, oldest, self.local(), running, viewer, unhandled)

    def _tasks(self, query: Mapping[str, str], viewer: pages.Viewer) -> Markup:
        filters = parse_filters(query)
        before = _optional_id(query.get("before"), "before")
        with self.reads.session() as reads:
            tasks = reads.page(filters, before, PAGE + 1)
        return pages.task_list(tasks[:PAGE], query, filters, len(tasks) > PAGE, viewer)

    # -- acting ---------------------------------------------------------------------------------
    def _post(self, request: Request) -> Response:
        path, form = request.path, request.form
        if path == "/signin":
            return self._sign_in(request)
        self._check(request)
        if path == "/signout":
            return _redirect("/?done=signed-out", [("Set-Cookie", self.guard.signed_out_cookie())])
        if match := _TASK_ACTION.fullmatch(path):
            task_id, action = int(match[1]), match[2]
            if action == "retry":
                admin.rerun_tasks(self.runtime, [task_id])
                return _redirect(f"/tasks/{task_id}?done=retried")
            self.runtime.store.cancel([task_id])
            return _redirect(f"/tasks/{task_id}?done=cancelled")
        if path == "/tasks/retry":
            filters = parse_filters(form)
            total = admin.rerun_batches(self.runtime, self._retryable_batches(filters))
            return _redirect("/tasks?" + urlencode({**pages.filter_query(filters, form), "retried": str(total)}))
        if path == "/purge":
            return self._purge(form)
        raise BadInput(f"no action at {path}")

    def _check(self, request: Request) -> None:
        """Every action's gate, in the order a refusal is most useful to read."""
        if not self.guard.enabled:
            raise Refused("the dashboard is read-only: start the supervisor with --dashboard-token to allow actions.")
        if not same_origin(request.headers):
            raise Refused("the request came from another site.")
        if not self.guard.signed_in(request.headers.get("Cookie")):
            raise Refused("sign in with the dashboard token first.")
        if not self.guard.form_value_ok(request.form.get("csrf", "")):
            raise Refused("the form's CSRF value is missing or wrong (reload the page and try again).")

    def _sign_in(self, request: Request) -> Response:
        if not self.guard.enabled:
            raise Refused("the dashboard is read-only: start the supervisor with --dashboard-token to allow actions.")
        if not same_origin(request.headers):
            raise Refused("the request came from another site.")
        if not self.guard.token_matches(request.form.get("token", "")):
            log.warning("dashboard sign-in with a wrong token")
            raise Refused("wrong token.")
        next_path = _local_path(request.form.get("next", "/"))
        separator = "&" if "?" in next_path else "?"
        return _redirect(f"{next_path}{separator}done=signed-in", [("Set-Cookie", self.guard.session_cookie())])

    def _retryable_batches(self, filters: Filters) -> Any:
        before: int | None = None
        while True:
            with self.reads.session() as reads:
                batch = reads.retryable_ids(filters, before, BULK_BATCH)
            if not batch:
                return
            yield batch
            before = batch[-1]

    def _purge(self, form: Mapping[str, str]) -> Response:
        try:
            age = parse_duration(form.get("older_than", ""))
        except ValueError as exc:
            raise BadInput(f"older than: {exc}") from None
        status = form.get("status") or None
        if status is not None and status not in FINAL_STATUSES:
            raise BadInput(f"status: only finished tasks can be purged, not {status!r}")
        statuses = (status,) if status else FINAL_STATUSES
        total = admin.purge_finished(self.runtime, age, statuses)
        return _redirect("/tasks?" + urlencode({"purged": str(total)}))


def parse_filters(values: Mapping[str, str]) -> Filters:
    """The list's filters from query or form fields; `BadInput` names a bad one."""
    def text(name: str) -> str | None:
        value = values.get(name, "").strip()
        return value or None

    status = text("status")
    if status is not None and status not in admin.STATUSES:
        raise BadInput(f"status: must be one of {', '.join(admin.STATUSES)}, not {status!r}")
    return Filters(status=status, queue=text("queue"), key=text("key"), error=text("error"),
                   since=_moment(text("since"), "created from"), until=_moment(text("until"), "to"))


def _moment(text: str | None, label: str) -> dt.datetime | None:
    """A UTC ISO time (a zone in the text wins), or a duration meaning that long ago."""
    if text is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        try:
            return dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=parse_duration(text))
        except ValueError:
            raise BadInput(f"{label}: give a UTC time like 2026-01-31T12:00 or a duration ago like 2h, "
                           f"not {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _optional_id(text: str | None, name: str) -> int | None:
    if not text:
        return None
    if not text.isdigit() or int(text) >= 2**63:
        raise BadInput(f"{name}: must be a task id, not {text!r}")
    return int(text)


def _local_path(text: str) -> str:
    """A path on this server (never ``//host`` or ``https://…``): where a redirect may go."""
    return text if text.startswith("/") and not text.startswith("//") and "\\" not in text else "/"


def _bulk_notice(query: Mapping[str, str]) -> str | None:
    if query.get("retried", "").isdigit():
        return f"Retried {int(query['retried'])} failed or cancelled task(s) matching the filter."
    if query.get("purged", "").isdigit():
        return f"Purged {int(query['purged'])} finished task(s)."
    return None


def _redirect(location: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(303, b"", "text/plain; charset=utf-8", [("Location", location), *(headers or [])])
