"""The dashboard's actions (POST): sign-in and sign-out, retry and cancel, bulk actions, pause
and resume, run a periodic task now, purge.

Every action but the sign-in passes, in this order, before its body is read: a token is
configured, the request says it comes from this origin, the browser is signed in; then its
form's CSRF value must be one of the session's, unused. It writes through `operator` (so the
attempt log and the queues table say the dashboard did it), leaves a flash message in the
session for the next page (shown once), and redirects (303) to the page to see the result on.
"""
from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from .. import admin
from ..config import format_duration, parse_duration
from ..errors import InvalidQueue, TaskNotFound
from ..metrics.server import Reply as Response
from ..queues import TEXT_LIMITS, check_name
from ..store.sql.statements import FINAL_STATUSES
from ..submit import CANCELLABLE
from . import operator, task_pages
from .access import same_origin
from .inputs import MAX_ID, BadInput, local_path, parse_filters, parse_form, text
from .queries import Filters

if TYPE_CHECKING:
    from .app import Dashboard, Request

log = logging.getLogger("gta.dashboard")

BULK_BATCH = 500  # tasks per transaction of a bulk action
BULK_CAP = 10_000  # tasks one bulk action changes at most
_TASK_ACTION = re.compile(r"/tasks/([0-9]{1,19})/(retry|cancel)")


class Refused(Exception):
    """An action the request may not take (HTTP 403, nothing changed)."""


class Locked(Exception):
    """Sign-ins from this client are refused for ``seconds`` (HTTP 429)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"too many wrong tokens from this address: try again in {math.ceil(seconds)}s.")
        self.seconds = seconds


def redirect(location: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(303, b"", "text/plain; charset=utf-8", [("Location", location), *(headers or [])])


class Actions:
    def __init__(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard
        self.guard = dashboard.guard
        self.runtime = dashboard.runtime

    def post(self, request: Request) -> Response:
        if request.path == "/signin":
            return self._sign_in(request)
        session = self._check(request)
        form = parse_form(request.read_body())
        if not self.guard.spend_form_value(session, form.get("csrf", "")):
            raise Refused("the form's CSRF value is missing, wrong or used already (reload the page and try again).")
        if request.path == "/signout":
            return redirect("/", [("Set-Cookie", self.guard.sign_out(session))])
        try:
            location, message = self._act(request.path, form)
        finally:
            self.dashboard.queue_state.forget()  # the next page shows what the action did
        self.guard.sessions.flash(session, message)
        return redirect(location)

    def _act(self, path: str, form: Mapping[str, str]) -> tuple[str, str]:
        """Do the action at ``path``: where to go next, and what to tell there."""
        if match := _TASK_ACTION.fullmatch(path):
            task_id, action = int(match[1]), match[2]
            if task_id > MAX_ID:
                raise TaskNotFound(f"no task with id {task_id}")
            back = local_path(form["next"]) if form.get("next") else f"/tasks/{task_id}"
            if action == "retry":
                operator.retry(self.runtime, [task_id])
                return back, f"Retried task {task_id}: it is pending again."
            was = operator.cancel(self.runtime, [task_id]).get(task_id)
            if was is None:
                raise TaskNotFound(f"no task with id {task_id}")
            if was not in CANCELLABLE:
                return back, f"Task {task_id} was already {was}: not cancelled."
            return back, f"Cancelled task {task_id} (it was {was})."
        if path == "/tasks/bulk":
            return self._bulk(form)
        if path in ("/queue/pause", "/queue/resume"):
            return self._queue(path.rpartition("/")[2], form)
        if path == "/periodic/run":
            schedule = self.dashboard.catalog().schedule(form.get("name", ""))
            if schedule is None:
                raise BadInput("name: no periodic task of this supervisor has that name")
            task_id = operator.run_now(self.runtime, schedule)
            return (local_path(form["next"]) if form.get("next") else "/queues",
                    f"Started periodic task {schedule.name!r} now: task {task_id}.")
        if path == "/purge":
            return self._purge(form)
        raise BadInput(f"no action at {path}")

    # -- gates ----------------------------------------------------------------------------------
    def _check(self, request: Request) -> str:
        """Every action's gate before its body is read, in the order a refusal is most useful
        to read; the request's session."""
        self._check_origin(request)
        session = self.guard.session(request.headers.get("Cookie"))
        if session is None:
            raise Refused("sign in with the dashboard token first (a sign-in ends after "
                          f"{format_duration(self.dashboard.settings.dashboard_session_idle)} unused, or at sign-out).")
        return session

    def _check_origin(self, request: Request) -> None:
        if not self.guard.enabled:
            raise Refused("the dashboard is read-only: start the supervisor with --dashboard-token to allow actions.")
        if not same_origin(request.headers):
            raise Refused("the request came from another site.")

    def _sign_in(self, request: Request) -> Response:
        self._check_origin(request)
        throttle = self.dashboard.throttle
        if wait := throttle.locked_for(request.client):
            raise Locked(wait)
        form = parse_form(request.read_body())
        if not self.guard.token_matches(form.get("token", "")):
            lockout = throttle.wrong(request.client)
            log.warning("dashboard sign-in with a wrong token from %s%s", request.client,
                        f": its sign-ins are refused for {lockout:g}s" if lockout else "")
            raise Refused("wrong token.")
        throttle.right(request.client)
        cookie = self.guard.sign_in()
        session = self.guard.session(cookie.partition(";")[0])
        if session is not None:
            self.guard.sessions.flash(session, "Signed in: actions are allowed in this browser.")
        return redirect(local_path(form.get("next", "/")).partition("#")[0], [("Set-Cookie", cookie)])

    # -- bulk -----------------------------------------------------------------------------------
    @staticmethod
    def bulk_statuses(action: str, filters: Filters) -> Sequence[str]:
        """The statuses a bulk ``action`` changes under ``filters`` (the status filter narrows them)."""
        label, statuses = task_pages.BULK_ACTIONS[action]
        if filters.status is None:
            return statuses
        if filters.status not in statuses:
            raise BadInput(f"status: {action} changes {' or '.join(statuses)} tasks only, not {filters.status}")
        return (filters.status,)

    def _bulk(self, form: Mapping[str, str]) -> tuple[str, str]:
        action = form.get("action", "")
        if action not in task_pages.BULK_ACTIONS:
            raise BadInput(f"action: must be one of {', '.join(task_pages.BULK_ACTIONS)}")
        filters = parse_filters(form)
        statuses = self.bulk_statuses(action, filters)
        batches = self._batches(filters, statuses, BULK_CAP)
        if action == "retry":
            total = operator.retry_batches(self.runtime, batches)
        else:
            total = sum(sum(1 for was in operator.cancel(self.runtime, batch).values() if was in statuses)
                        for batch in batches)
        with self.dashboard.reads.session() as reads:
            left = reads.count_matching(filters, statuses, 1)
        done = "retried" if action == "retry" else "cancelled"
        message = f"{done.capitalize()} {total:,} task(s) matching {task_pages.describe(filters)}."
        if left:
            message += (f" Some still match (one action takes at most {BULK_CAP:,}, and tasks that changed "
                        "meanwhile are left): run it again to go on.")
        return "/tasks?" + urlencode(task_pages.filter_query(form)), message

    def _batches(self, filters: Filters, statuses: Sequence[str], cap: int) -> Iterator[list[int]]:
        """Ids to change, newest first, `BULK_BATCH` at a time, ``cap`` in all."""
        before: int | None = None
        taken = 0
        while taken < cap:
            with self.dashboard.reads.session() as reads:
                batch = reads.matching_ids(filters, statuses, before, min(BULK_BATCH, cap - taken))
            if not batch:
                return
            yield batch
            taken += len(batch)
            before = batch[-1]

    # -- queues ---------------------------------------------------------------------------------
    def _queue(self, action: str, form: Mapping[str, str]) -> tuple[str, str]:
        name = form.get("name", "")
        try:
            check_name(name)
        except InvalidQueue as exc:
            raise BadInput(str(exc)) from None
        back = local_path(form["next"]) if form.get("next") else "/queue?" + urlencode({"name": name})
        if action == "resume":
            changed = operator.resume(self.runtime, name)
            return back, (f"Resumed queue {name!r}: its due tasks start again." if changed
                          else f"Queue {name!r} was not paused: nothing changed.")
        reason = text(form, "reason", TEXT_LIMITS["reason"])
        changed = operator.pause(self.runtime, name, reason)
        return back, (f"Paused queue {name!r}: no new task of it starts, on any supervisor, until it is resumed "
                      "(running ones finish; submitting still works)." if changed
                      else f"Queue {name!r} was already paused: nothing changed.")

    # -- purge ----------------------------------------------------------------------------------
    def _purge(self, form: Mapping[str, str]) -> tuple[str, str]:
        try:
            seconds = parse_duration(form.get("older_than", ""))
        except ValueError as exc:
            raise BadInput(f"older than: {exc}") from None
        status = form.get("status") or None
        if status is not None and status not in FINAL_STATUSES:
            raise BadInput(f"status: only finished tasks can be purged, not {status!r}")
        statuses = (status,) if status else FINAL_STATUSES
        total = admin.purge_finished(self.runtime, seconds, statuses)
        return "/tasks", f"Purged {total:,} finished task(s)."
