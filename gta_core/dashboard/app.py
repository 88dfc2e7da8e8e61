"""The dashboard's routes: a request in, a `Response` out.

The sidecar hands every path other than ``/metrics`` and ``/healthz`` to `Dashboard.handle`
on the request's own thread (the sidecar's server is threaded), so a slow page never delays a
scrape or a probe. The server has already checked the ``Host`` and the body's announced
length (`gta_core.metrics.server`); an action reads the body only after the checks that need
no body (token configured, same origin, signed in or not locked out). Bad input is answered
4xx with a short message naming the field, never an exception's text.

Every page is a `pages.Screen` built by `Dashboard.screen`, for the first view and for each live
update (``/live/<page path>``, `live`), so an update shows exactly what a reload would.
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

from ..config import Settings
from ..errors import GTAError, TaskNotFound
from ..metrics.catalog import Catalog
from ..metrics.server import Reply as Response
from ..runtime import Runtime
from ..store.roster import unhandled
from ..tasks import covers
from . import charts, live, overview, pages, task_pages, worker_page, workflow_page
from .access import SECURITY_HEADERS, Guard
from .actions import BULK_CAP, Actions, Locked, Refused, redirect
from .history import ALL, History, TableReader
from .inputs import MAX_ID, BadInput, id_list, local_path, optional_id, parse_filters, text
from .queries import CHAIN_STEPS, PAGE, DashboardReads, Fresh, ReadTimeout
from .queue_pages import QueueView, queue_screen, queues_screen, slot_keys
from .render import Markup, asset
from .sessions import Sessions
from .throttle import SignInThrottle

ASSETS = {"style.css": "text/css; charset=utf-8", "local-time.js": "text/javascript; charset=utf-8",
          "live.js": "text/javascript; charset=utf-8"}
HTML = "text/html; charset=utf-8"
QUEUE_STATE_AGE = 1.0  # seconds a reading of the queues (depth, pauses, limits) serves every viewer
_TASK = re.compile(r"/tasks/([0-9]{1,19})")
_GROUP = re.compile(r"/groups/([0-9]{1,19})")


@dataclasses.dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    client: str = ""  # the peer's address: sign-in attempts are counted per client
    read_body: Callable[[], bytes] = lambda: b""  # read only when an action has passed the checks before it


class Dashboard:
    def __init__(self, settings: Settings, local: Callable[[], pages.LocalSupervisor | None] = lambda: None,
                 catalog: Callable[[], Catalog] = Catalog) -> None:
        self.settings = settings
        self.guard = Guard(settings.dashboard_token,
                           Sessions(settings.dashboard_session_idle, settings.dashboard_session_max_age))
        self.throttle = SignInThrottle()
        self.reads = DashboardReads(settings.database_url, settings.table)
        self.runtime = Runtime(settings)  # actions write through the same code as the CLI
        self.local = local
        self.catalog = catalog  # what this sidecar's supervisor runs (`metrics.catalog`)
        self.history = History(TableReader(self.reads), settings.metrics_max_queues)
        self.actions = Actions(self)
        self.queue_state = Fresh(self._read_queue_view, QUEUE_STATE_AGE)
        self._drawn: dict[str, tuple[int, Markup]] = {}  # charts by queue, with the history version drawn

    # -- entry -------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        live_update = request.path == "/live" or request.path.startswith("/live/")
        session = self.guard.session(request.headers.get("Cookie"), touch=not live_update)
        viewer = self._viewer(request, session)
        try:
            if request.method == "POST":
                try:
                    return self.actions.post(request)
                finally:
                    self.runtime.db.close()  # this request thread's connection: the thread ends next
            if live_update:
                return live.reply(self, request, viewer)
            return self._get(request, viewer, session)
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

    def _viewer(self, request: Request, session: str | None) -> pages.Viewer:
        here = request.path + ("?" + urlencode(request.query) if request.query else "")
        return pages.Viewer(session is not None, self.guard.enabled, self.guard.form_value(session) if session else "",
                            here)

    def _page(self, status: int, title: str, body: Markup, viewer: pages.Viewer, notice: str | None = None,
              error: bool = False, live_url: str | None = None, search: str = "") -> Response:
        html = pages.page(title, body, viewer, self.settings.table, notice, error, live_url, search)
        return Response(status, html.encode(), HTML, list(SECURITY_HEADERS))

    # -- reading ----------------------------------------------------------------------------------
    def _get(self, request: Request, viewer: pages.Viewer, session: str | None) -> Response:
        path = request.path.rstrip("/") or "/"
        if path == "/signin":
            return self._page(200, "Sign in", pages.signin(local_path(request.query.get("next", "/"))), viewer)
        if path.startswith("/static/") and path[len("/static/"):] in ASSETS:
            name = path[len("/static/"):]
            return Response(200, asset(name), ASSETS[name], [("Cache-Control", "max-age=300"),
                                                             ("X-Content-Type-Options", "nosniff")])
        if path == "/search":
            return redirect(self._search(text(request.query, "q") or ""))
        screen = self.screen(path, request.query, viewer, full=True)
        if screen is None:
            return self._page(404, "Not found", Markup(""), viewer,
                              "No such page: try the overview, /metrics or /healthz.", error=True)
        notice = self.guard.sessions.take_flash(session) if session else None
        return self._page(200, screen.title, screen.body(viewer), viewer, notice, live_url=screen.live,
                          search=request.query.get("q", ""))

    def screen(self, path: str, query: Mapping[str, str], viewer: pages.Viewer, full: bool) -> pages.Screen | None:
        """The page at ``path`` (None: no such page); ``full`` for a first view, else for a live
        update (which skips what is read once per view)."""
        if path == "/":
            return self._overview(viewer, full)
        if path == "/queues":
            return queues_screen(self._queue_view(), self._day(ALL), viewer,
                                 self.settings.metrics_max_queues)
        if path == "/queue":
            name = text(query, "name", 191)
            if name is None:
                raise BadInput("name: which queue? (/queue?name=QUEUE)")
            return queue_screen(name, self._queue_view(), self._day(name), viewer)
        if path == "/workers":
            with self.reads.session() as reads:
                roster, tasks, now = reads.supervisors(), reads.running_tasks(), reads.now()
            return worker_page.screen(roster, tasks, now, self.local(), viewer)
        if path == "/tasks":
            return self._tasks(query, viewer, full)
        if path == "/tasks/bulk":
            return self._bulk(query, viewer)
        if match := _TASK.fullmatch(path):
            return self._task(int(match[1]), viewer)
        if match := _GROUP.fullmatch(path):
            return self._group(int(match[1]))
        return None

    def _queue_view(self) -> QueueView:
        view = self.queue_state()
        names, _ = view.names(self.settings.metrics_max_queues)
        recent = {name: found for name in [*names, ALL] if (found := self.history.recent(name)) is not None}
        return dataclasses.replace(view, recent=recent)

    def _read_queue_view(self) -> QueueView:
        """What the queue pages read from the tables (`queue_state` shares it between viewers)."""
        catalog = self.catalog()
        with self.reads.session() as reads:
            now, groups = reads.now(), reads.pending_groups()
            return QueueView(now, reads.queue_depth(groups),
                             {control.name: control for control in reads.queue_controls()}, reads.limits(), {},
                             catalog, reads.periodic_runs(slot_keys(catalog, now)), self.settings.queues,
                             unhandled(groups, reads.supervisors()))

    def _day(self, queue: str) -> Markup:
        """A queue's 24-hour charts, drawn again only after the history's next reading."""
        version = self.history.version
        drawn = self._drawn.get(queue)
        if drawn is None or drawn[0] != version:
            if len(self._drawn) > self.settings.metrics_max_queues:  # any name can be asked for
                self._drawn.clear()
            drawn = self._drawn[queue] = (version, charts.day(self.history.chart(queue)))
        return drawn[1]

    def _overview(self, viewer: pages.Viewer, full: bool) -> pages.Screen:
        view = self._queue_view()
        counts: dict[tuple[str, str], int] | None = None
        if full:
            try:  # reads every row: on a huge table it may run out of time, and the rest still shows
                with self.reads.session() as reads:
                    counts = reads.counts()
            except ReadTimeout:
                pass
        return overview.screen(view, self._day(ALL), view.recent.get(ALL), self.local(), viewer,
                               self.settings.metrics_max_queues, counts, full)

    def _tasks(self, query: Mapping[str, str], viewer: pages.Viewer, full: bool) -> pages.Screen:
        filters = parse_filters(query)
        before = optional_id(query.get("before"), "before")
        if full:
            with self.reads.session() as reads:
                tasks = reads.page(filters, before, PAGE + 1)
            return task_pages.list_screen(tasks[:PAGE], query, filters, len(tasks) > PAGE, viewer)
        top = optional_id(query.get("top"), "top")
        with self.reads.session() as reads:  # the rows on screen by primary key, and newer ones counted
            tasks = reads.rows(id_list(query.get("ids"), "ids"))
            newer = reads.newer(filters, top, task_pages.NEWER_SPAN) if top is not None else 0
        return task_pages.list_screen(tasks, query, filters, False, viewer, newer)

    def _bulk(self, query: Mapping[str, str], viewer: pages.Viewer) -> pages.Screen:
        action = query.get("action", "")
        if action not in task_pages.BULK_ACTIONS:
            raise BadInput(f"action: must be one of {', '.join(task_pages.BULK_ACTIONS)}")
        filters = parse_filters(query)
        statuses = self.actions.bulk_statuses(action, filters)
        with self.reads.session() as reads:
            matching = reads.count_matching(filters, statuses, BULK_CAP + 1)
        return task_pages.bulk_screen(action, statuses, filters, query, matching, BULK_CAP, viewer)

    def _task(self, task_id: int, viewer: pages.Viewer) -> pages.Screen:
        task = None
        if task_id <= MAX_ID:
            with self.reads.session() as reads:
                task = reads.task(task_id)
                children = reads.children(task_id) if task else []
                history = reads.attempts(task_id) if task else []
                now = reads.now()
        if task is None:
            raise TaskNotFound(f"no task with id {task_id}")
        return task_pages.task_screen(task, children, history, now, viewer)

    def _group(self, group_id: int) -> pages.Screen:
        with self.reads.session() as reads:
            group = reads.group(group_id) if group_id <= MAX_ID else None
            if group is None:
                raise TaskNotFound(f"no group or chain with id {group_id}")
            if group["kind"] == "chain":
                part = workflow_page.steps_table(_chain_steps(reads, group))
            else:
                members = reads.members([group_id])
                callback = reads.brief([group["callback_id"]]).get(group["callback_id"]) \
                    if group["callback_id"] is not None else None
                part = workflow_page.members_table(group, members, callback)
        return workflow_page.screen(group, part)

    def _search(self, query: str) -> str:
        """Where a search goes: a task id to its page, a task key this supervisor knows to its
        tasks, anything else to the tasks whose arguments contain it."""
        if not query:
            return "/tasks"
        if query.isascii() and query.isdigit() and len(query) <= 19:
            return f"/tasks/{query}"
        if any(covers(handler.key, query) for handler in self.catalog().handlers):
            return "/tasks?" + urlencode({"key": query})
        return "/tasks?" + urlencode({"args": query})


def _chain_steps(reads: DashboardReads, link: Mapping[str, Any]) -> list[tuple[int, dict[str, Any] | None]]:
    """A chain's steps in order, from any of its links (each link is a group of one step whose
    callback is the next step): the links before it through the group whose callback each
    first step is, those after it through each callback's own link, `CHAIN_STEPS` each way."""
    links = [dict(link)]
    for _ in range(CHAIN_STEPS):
        first = reads.members([links[0]["id"]], 1)
        previous = reads.group_waiting_for(first[0]["id"]) if first else None
        found = reads.group(previous) if previous is not None else None
        if found is None:
            break
        links.insert(0, found)
    for _ in range(CHAIN_STEPS):
        callback = links[-1]["callback_id"]
        following = reads.brief([callback]).get(callback, {}).get("group_id") if callback is not None else None
        found = reads.group(int(following)) if following is not None else None
        if found is None or found["kind"] != "chain":
            break
        links.append(found)
    step_of = {member["group_id"]: member["id"] for member in reads.members([group["id"] for group in links],
                                                                           len(links))}
    ids = [step_of[group["id"]] for group in links if group["id"] in step_of]
    if links[-1]["callback_id"] is not None:
        ids.append(int(links[-1]["callback_id"]))
    known = reads.brief(ids)
    return [(task_id, known.get(task_id)) for task_id in ids]
