"""The dashboard's routes: a request in, a `Response` out.

The sidecar hands every path other than ``/metrics`` and ``/healthz`` to `Dashboard.handle`
on the request's own thread (the sidecar's server is threaded), so a slow page never delays a
scrape or a probe. The server has already checked the ``Host`` and the body's announced
length (`gta_core.metrics.server`); an action reads the body only after the checks that need
no body (token configured, same origin, signed in or not locked out). Bad input is answered
4xx with a short message naming the field, never an exception's text.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from .. import admin
from ..config import Settings, parse_duration
from ..errors import GTAError, TaskNotFound
from ..metrics.server import Reply as Response
from ..runtime import Runtime
from ..sql import FINAL_STATUSES
from . import pages
from .access import Guard, same_origin
from .queries import PAGE, DashboardReads, Filters, ReadTimeout
from .render import Markup, asset
from .sessions import Sessions
from .throttle import SignInThrottle

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
#: who the attempt log records the dashboard's actions as
ACTOR = "dashboard"
FILTER_LIMIT = 500  # characters of one filter field
MAX_ID = 2**63 - 1  # the id column's largest value
HTML = "text/html; charset=utf-8"
_TASK = re.compile(r"/tasks/([0-9]{1,19})")
_TASK_ACTION = re.compile(r"/tasks/([0-9]{1,19})/(retry|cancel)")
#: what a redirect target must not hold: controls (browsers drop tab and newline, so ``/\t/x``
#: becomes ``//x``, another host) and backslash (read as ``/``)
_NOT_IN_PATH = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")


def _no_body() -> bytes:
    return b""


@dataclasses.dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    client: str = ""  # the peer's address: sign-in attempts are counted per client
    read_body: Callable[[], bytes] = _no_body  # read only when an action has passed the checks before it


class Refused(Exception):
    """An action the request may not take (HTTP 403, nothing changed)."""


class BadInput(Exception):
    """A malformed filter or form value (HTTP 400)."""


class Locked(Exception):
    """Sign-ins from this client are refused for ``seconds`` (HTTP 429)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"too many wrong tokens from this address: try again in {math.ceil(seconds)}s.")
        self.seconds = seconds


def parse_form(body: bytes) -> dict[str, str]:
    try:
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=100))
    except ValueError:  # more fields than any of our forms has
        raise BadInput("the form has too many fields") from None


class Dashboard:
    def __init__(self, settings: Settings, local: Callable[[], pages.LocalSupervisor | None] = lambda: None) -> None:
        self.settings = settings
        self.guard = Guard(settings.dashboard_token,
                           Sessions(settings.dashboard_session_idle, settings.dashboard_session_max_age))
        self.throttle = SignInThrottle()
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
        except Locked as exc:
            response = self._page(429, "Too many attempts", Markup(""), viewer, str(exc), error=True)
            response.headers.append(("Retry-After", str(math.ceil(exc.seconds))))
            return response
        except TaskNotFound as exc:
            return self._page(404, "Not found", Markup(""), viewer, str(exc), error=True)
        except BadInput as exc:
            return self._page(400, "Bad request", Markup(""), viewer, str(exc), error=True)
        except ReadTimeout as exc:
            return self._page(503, "Too slow", Markup(""), viewer,
                              f"{exc}: narrow the filter (status, queue, key or a recent time range).", error=True)
        except GTAError as exc:
            return self._page(409, "Not done", Markup(""), viewer, str(exc), error=True)

    def _viewer(self, request: Request) -> pages.Viewer:
        session = self.guard.session(request.headers.get("Cookie"))
        return pages.Viewer(session is not None, self.guard.enabled, self.guard.form_value(session) if session else "")

    def _page(self, status: int, title: str, body: Markup, viewer: pages.Viewer, notice: str | None = None,
              error: bool = False) -> Response:
        html = pages.page(title, body, viewer, self.settings.table, notice, error)
        return Response(status, html.encode(), HTML, list(SECURITY_HEADERS))

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
            task, children, history = None, [], []
            if task_id <= MAX_ID:
                with self.reads.session() as reads:
                    task = reads.task(task_id)
                    children = reads.children(task_id) if task else []
                    history = reads.attempts(task_id) if task else []
            if task is None:
                return self._page(404, f"Task {task_id}", Markup(""), viewer, f"no task with id {task_id}", error=True)
            return self._page(200, f"Task {task_id}", pages.task_detail(task, children, viewer, history), viewer,
                              notice)
        if path == "/signin":
            return self._page(200, "Sign in", pages.signin(local_path(request.query.get("next", "/"))), viewer)
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
        return pages.overview(counts, finished, now, oldest, self.local(), running, viewer,
                              self.settings.metrics_max_queues, unhandled)

    def _tasks(self, query: Mapping[str, str], viewer: pages.Viewer) -> Markup:
        filters = parse_filters(query)
        before = _optional_id(query.get("before"), "before")
        with self.reads.session() as reads:
            tasks = reads.page(filters, before, PAGE + 1)
        return pages.task_list(tasks[:PAGE], query, filters, len(tasks) > PAGE, viewer)

    # -- acting ---------------------------------------------------------------------------------
    def _post(self, request: Request) -> Response:
        path = request.path
        if path == "/signin":
            return self._sign_in(request)
        session = self._check(request)
        form = parse_form(request.read_body())
        if not self.guard.spend_form_value(session, form.get("csrf", "")):
            raise Refused("the form's CSRF value is missing, wrong or used already (reload the page and try again).")
        if path == "/signout":
            return _redirect("/?done=signed-out", [("Set-Cookie", self.guard.sign_out(session))])
        if match := _TASK_ACTION.fullmatch(path):
            task_id, action = int(match[1]), match[2]
            if task_id > MAX_ID:
                raise TaskNotFound(f"no task with id {task_id}")
            if action == "retry":
                admin.rerun_tasks(self.runtime, [task_id], ACTOR)
                return _redirect(f"/tasks/{task_id}?done=retried")
            self.runtime.store.cancel([task_id], by=ACTOR)
            return _redirect(f"/tasks/{task_id}?done=cancelled")
        if path == "/tasks/retry":
            filters = parse_filters(form)
            total = admin.rerun_batches(self.runtime, self._retryable_batches(filters), by=ACTOR)
            return _redirect("/tasks?" + urlencode({**pages.filter_query(filters, form), "retried": str(total)}))
        if path == "/purge":
            return self._purge(form)
        raise BadInput(f"no action at {path}")

    def _check(self, request: Request) -> str:
        """Every action's gate before its body is read, in the order a refusal is most useful
        to read; the request's session."""
        self._check_origin(request)
        session = self.guard.session(request.headers.get("Cookie"))
        if session is None:
            raise Refused("sign in with the dashboard token first (a sign-in ends after "
                          f"{pages.age(self.settings.dashboard_session_idle)} unused, or at sign-out).")
        return session

    def _check_origin(self, request: Request) -> None:
        if not self.guard.enabled:
            raise Refused("the dashboard is read-only: start the supervisor with --dashboard-token to allow actions.")
        if not same_origin(request.headers):
            raise Refused("the request came from another site.")

    def _sign_in(self, request: Request) -> Response:
        self._check_origin(request)
        if wait := self.throttle.locked_for(request.client):
            raise Locked(wait)
        form = parse_form(request.read_body())
        if not self.guard.token_matches(form.get("token", "")):
            lockout = self.throttle.wrong(request.client)
            log.warning("dashboard sign-in with a wrong token from %s%s", request.client,
                        f": its sign-ins are refused for {lockout:g}s" if lockout else "")
            raise Refused("wrong token.")
        self.throttle.right(request.client)
        next_path = local_path(form.get("next", "/")).partition("#")[0]
        separator = "&" if "?" in next_path else "?"
        return _redirect(f"{next_path}{separator}done=signed-in", [("Set-Cookie", self.guard.sign_in())])

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
        if len(value) > FILTER_LIMIT or "\x00" in value:
            raise BadInput(f"{name}: at most {FILTER_LIMIT} characters, none of them NUL")
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
    try:
        return (moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)
    except OverflowError:
        raise BadInput(f"{label}: {text!r} is outside the years 1 to 9999 in UTC") from None


def _number(text: str | None) -> int | None:
    """A number written in ASCII digits (``int`` also reads ``²`` or ``١``), or None."""
    return int(text) if text and text.isascii() and text.isdigit() else None


def _optional_id(text: str | None, name: str) -> int | None:
    if not text:
        return None
    value = _number(text)
    if value is None or value > MAX_ID:
        raise BadInput(f"{name}: must be a task id, not {text!r}")
    return value


def local_path(text: str) -> str:
    """Where a redirect after sign-in may go: a path on this server (``/…``, never ``//host``,
    a control character or a backslash), spaces and non-ASCII characters percent-encoded;
    anything else is ``/``."""
    if not text.startswith("/") or text.startswith("//") or _NOT_IN_PATH.search(text):
        return "/"
    return quote(text, safe="/?#[]@!$&'()*+,;=:%~")


def _bulk_notice(query: Mapping[str, str]) -> str | None:
    if (retried := _number(query.get("retried"))) is not None:
        return f"Retried {retried} failed or cancelled task(s) matching the filter."
    if (purged := _number(query.get("purged"))) is not None:
        return f"Purged {purged} finished task(s)."
    return None


def _redirect(location: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(303, b"", "text/plain; charset=utf-8", [("Location", location), *(headers or [])])
