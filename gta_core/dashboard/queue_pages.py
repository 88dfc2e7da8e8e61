"""The Queues page (every queue) and a queue's page: depth, throughput, time in queue, paused
state, limits, pause and resume, handlers and periodic tasks with "run now".

What a queue is doing now comes from `QueueView` (read by `app` on the pending and running
rows' indexes, the queues and limits tables, and the history's memory); its handlers and
schedules from the supervisor's catalog (`metrics.catalog`).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from ..config import format_duration
from ..limits import LimitState
from ..metrics.catalog import Catalog, Handler, Schedule
from ..store.operations import QueueControl
from ..store.roster import Unhandled
from .history import Recent
from .pages import Screen, Viewer, count, form, queue_link, sign_in_hint, status, table, task_link
from .queries import QueueDepth
from .render import Markup, join, tag, when

#: warnings of tasks no live supervisor handles shown on a page (the most waiting first)
UNHANDLED_SHOWN = 20


@dataclasses.dataclass(frozen=True)
class QueueView:
    """Everything the queue pages show, read once per view or live update."""

    now: dt.datetime
    depth: Mapping[str, QueueDepth]
    controls: Mapping[str, QueueControl]
    limits: Sequence[LimitState]
    recent: Mapping[str, Recent]  # by queue, from the history (absent before its first reading)
    catalog: Catalog
    runs: Mapping[str, dict[str, Any]]  # periodic slots' rows by dedupe key
    served: Sequence[str]  # the queues this sidecar's supervisor serves
    unhandled: Sequence[Unhandled] = ()  # due tasks no live supervisor handles (`store.roster.unhandled`)

    def names(self, limit: int) -> tuple[list[str], int]:
        """The queues to list by name (paused first, then the busiest, up to ``limit``; whoever
        submits chooses queue names), and how many more there are."""
        known = (set(self.depth) | set(self.controls) | set(self.served)
                 | {handler.queue for handler in self.catalog.handlers}
                 | {schedule.queue for schedule in self.catalog.schedules})
        ranked = sorted(known, key=lambda name: (not self.paused(name), -self._load(name), name))
        return sorted(ranked[:limit]), max(0, len(ranked) - limit)

    def _load(self, name: str) -> int:
        depth = self.depth.get(name)
        return depth.pending + depth.running if depth else 0

    def paused(self, name: str) -> bool:
        control = self.controls.get(name)
        return bool(control and control.paused)

    def queue_limit(self, name: str) -> LimitState | None:
        return next((limit for limit in self.limits if limit.kind == "queue" and limit.name == name), None)

    def last_run(self, schedule: Schedule) -> dict[str, Any] | None:
        for label in schedule.periodic.recent_slots(self.now):
            run = self.runs.get(schedule.periodic.dedupe_key(label))
            if run is not None:
                return run
        return None


def unhandled_notices(unhandled: Sequence[Unhandled]) -> Markup:
    """A warning for each task key and queue whose due tasks no live supervisor handles (the
    `UNHANDLED_SHOWN` with the most waiting), each with a link to those tasks."""
    notices = [tag("p", join([group.describe() + " (", tag("a", "list them", href="/tasks?" + urlencode(
        {"status": "pending", "queue": group.queue, "key": group.key})), ")"]), class_="notice unhandled")
        for group in unhandled[:UNHANDLED_SHOWN]]
    if len(unhandled) > UNHANDLED_SHOWN:
        notices.append(tag("p", f"and {len(unhandled) - UNHANDLED_SHOWN} more task keys and queues that no live "
                                "supervisor handles: see `gta stats`", class_="notice unhandled"))
    return join(notices)


def slot_keys(catalog: Catalog, now: dt.datetime) -> list[str]:
    """The dedupe keys whose rows say when each periodic task last ran (`QueueView.runs`)."""
    return [schedule.periodic.dedupe_key(label) for schedule in catalog.schedules
            for label in schedule.periodic.recent_slots(now)]


# -- pieces ---------------------------------------------------------------------------------------
def _state(view: QueueView, name: str) -> Markup:
    control = view.controls.get(name)
    if not (control and control.paused):
        return tag("span", "active", class_="state-active")
    details = [f"since {control.changed_at:%Y-%m-%d %H:%M} UTC" if control.changed_at else "",
               f"by {control.changed_by}" if control.changed_by else ""]
    return join([tag("span", "paused", class_="state-paused"), " ",
                 tag("span", " ".join(part for part in details if part), class_="muted"),
                 tag("div", control.reason, class_="reason") if control.reason else ""])


def _limit_text(limit: LimitState | None, running: int | None) -> str:
    """``3/5 running, 100/m starts`` (``at most 5 running`` without a count of running tasks)."""
    if limit is None:
        return "-"
    parts = []
    if limit.concurrency is not None:
        cap = f"at most {limit.concurrency}" if running is None else f"{running}/{limit.concurrency}"
        parts.append(f"{cap} running" + (" per key" if limit.per_key else ""))
    if limit.rate_limit is not None:
        parts.append(f"{limit.rate_limit} starts")
    return ", ".join(parts) or "-"


def _rate(recent: Recent | None, field: str) -> str:
    return "-" if recent is None else f"{getattr(recent, field):,.1f}"


def _waits(recent: Recent | None) -> str:
    if recent is None or recent.wait_p50 is None:
        return "-"
    return f"{format_duration(recent.wait_p50)} / {format_duration(recent.wait_p95)}"


def _controls(view: QueueView, name: str, viewer: Viewer, with_reason: bool) -> Markup:
    target = {"name": name}
    if view.paused(name):
        return form("/queue/resume", viewer, "Resume", target, name=f"Resume queue {name}")
    reason = [tag("label", join(["reason ", tag("input", name="reason", size="18", maxlength="10000",
                                                 placeholder="optional")]))] if with_reason else []
    return form("/queue/pause", viewer, "Pause", target, name=f"Pause queue {name}", inputs=reason)


def queues_table(view: QueueView, viewer: Viewer, limit: int) -> Markup:
    names, more = view.names(limit)
    rows = []
    for name in names:
        depth = view.depth.get(name, QueueDepth())
        recent = view.recent.get(name)
        rows.append((queue_link(name), _state(view, name), count(depth.pending), count(depth.due), count(depth.running),
                     count(depth.waiting), format_duration(depth.oldest_due), _rate(recent, "succeeded_per_minute"),
                     _rate(recent, "failed_per_minute"), _waits(recent),
                     _limit_text(view.queue_limit(name), depth.running),
                     *([_controls(view, name, viewer, False)] if viewer.can_act else [])))
    header = ("queue", "state", "pending", "due", "running", "waiting", "oldest due", "done/min", "failed/min",
              "wait p50 / p95", "limit", *(["actions"] if viewer.can_act else []))
    note = tag("p", f"{more:,} more queues are not listed (the {limit} paused or busiest are; "
                    "--metrics-max-queues sets how many)", class_="muted") if more else Markup("")
    return join([table(header, rows, numeric=(2, 3, 4, 5, 6, 7, 8), empty="no queue yet"), note])


def periodic_table(view: QueueView, schedules: Sequence[Schedule], viewer: Viewer) -> Markup:
    rows = []
    for schedule in schedules:
        run = view.last_run(schedule)
        last: Any = "-"
        if run is not None:
            last = join([task_link(run["id"]), " ", status(run["status"]), " ",
                         when(run["finished_at"] or run["started_at"] or run["created_at"])])
        action = form("/periodic/run", viewer, "Run now", {"name": schedule.name},
                      name=f"Run periodic task {schedule.name} now")
        rows.append((schedule.name, schedule.key, queue_link(schedule.queue), schedule.text, last,
                     when(schedule.periodic.next_slot(view.now)), *([action] if viewer.can_act else [])))
    header = ("name", "task", "queue", "schedule", "last run", "next run", *(["actions"] if viewer.can_act else []))
    return table(header, rows, empty="no periodic task (or the supervisor has not said yet)")


def handlers_table(handlers: Sequence[Handler], limits: Sequence[LimitState]) -> Markup:
    by_key = {limit.name: limit for limit in limits if limit.kind == "task"}
    rows = [(handler.key, handler.plugin, "async" if handler.is_async else "sync", handler.priority,
             handler.max_attempts, "-" if handler.timeout is None else format_duration(handler.timeout),
             _limit_text(by_key.get(handler.key), None))
            for handler in handlers]
    return table(("task", "plugin", "kind", "priority", "max attempts", "timeout", "limit"), rows, numeric=(3, 4),
                 empty="no handler of this supervisor uses this queue")


# -- the pages ------------------------------------------------------------------------------------
def queues_screen(view: QueueView, day: Markup, viewer: Viewer, limit: int) -> Screen:
    """``day``: the 24-hour charts of every queue (`charts.day`)."""
    parts = {
        "queues": queues_table(view, viewer, limit),
        "periodic": periodic_table(view, view.catalog.schedules, viewer),
        "charts": day,
    }
    return Screen("Queues", "queues.html", parts, {"hint": sign_in_hint(viewer, "pause, resume or run tasks")},
                  live="/live/queues")


def queue_screen(name: str, view: QueueView, day: Markup, viewer: Viewer) -> Screen:
    """``day``: the queue's 24-hour charts (`charts.day`)."""
    depth = view.depth.get(name, QueueDepth())
    recent = view.recent.get(name)
    limit = view.queue_limit(name)
    facts = table(("state", "pending", "due", "running", "waiting", "oldest due", "done/min (5 min)", "failed/min",
                   "wait p50 / p95 (15 min)", "limit"),
                  [(_state(view, name), count(depth.pending), count(depth.due), count(depth.running),
                    count(depth.waiting), format_duration(depth.oldest_due), _rate(recent, "succeeded_per_minute"),
                    _rate(recent, "failed_per_minute"), _waits(recent), _limit_text(limit, depth.running))],
                  numeric=(1, 2, 3, 4, 5, 6, 7))
    warnings = unhandled_notices([group for group in view.unhandled if group.queue == name])
    handlers, schedules = view.catalog.of_queue(name)
    links = join([tag("a", "its tasks", href="/tasks?" + urlencode({"queue": name})), " · ",
                  tag("a", "its failed tasks", href="/tasks?" + urlencode({"queue": name, "status": "failed"}))])
    parts = {
        "facts": join([warnings, facts]),
        "control": join([_controls(view, name, viewer, True), sign_in_hint(viewer, "pause or resume it")]),
        "periodic": periodic_table(view, schedules, viewer),
        "charts": day,
    }
    values = {"links": links, "handlers": handlers_table(handlers, view.limits)}
    return Screen(f"Queue {name}", "queue.html", parts, values, live="/live/queue?" + urlencode({"name": name}))
