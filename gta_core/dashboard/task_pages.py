"""The task list (filters, search, bulk actions), a bulk action's confirmation, and a task's page.

The list is keyset-paged newest first; its live update re-reads only the rows on screen (by
primary key) and counts newer matching rows within a bounded span of ids. A task's page puts
its status first, with its run time, its actions and its attempt timeline; the arguments,
context, result and the full error with its traceback follow.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from ..admin import RETRYABLE, STATUSES
from ..config import format_duration
from ..submit import CANCELLABLE
from .pages import (
    Screen,
    Viewer,
    error_history,
    form,
    headline,
    pretty,
    queue_link,
    shown,
    sign_in_hint,
    status,
    table,
    task_link,
)
from .queries import PREVIEW, Filters
from .render import Markup, join, tag, when

FILTER_FIELDS = ("status", "queue", "key", "args", "error", "since", "until")
NEWER_SPAN = 10_000  # ids above the newest row on screen that a live update looks at
BULK_ACTIONS = {"retry": ("Retry", RETRYABLE), "cancel": ("Cancel", CANCELLABLE)}
#: task columns shown on its page apart from those the summary and the sections show
_OTHER_FIELDS = ("priority", "run_at", "dedupe_key", "order_key", "lease_owner", "lease_expires_at", "updated_at")


def filter_query(raw: Mapping[str, str]) -> dict[str, str]:
    """The filter fields as the user typed them (for links and hidden fields)."""
    return {name: raw[name] for name in FILTER_FIELDS if raw.get(name)}


def describe(filters: Filters) -> str:
    """The filter in words, for a bulk action's confirmation."""
    parts = [f"{label} {value!r}" for label, value in (
        ("status", filters.status), ("queue", filters.queue), ("key", filters.key),
        ("arguments containing", filters.args), ("error containing", filters.error)) if value is not None]
    if filters.since is not None:
        parts.append(f"created from {filters.since:%Y-%m-%d %H:%M} UTC")
    if filters.until is not None:
        parts.append(f"created before {filters.until:%Y-%m-%d %H:%M} UTC")
    return ", ".join(parts) or "every task"


def _preview(text: str | None) -> str:
    if not text:
        return ""
    return text if len(text) <= PREVIEW else text[:PREVIEW] + "… (cut)"


# -- the list --------------------------------------------------------------------------------------
def rows_table(tasks: Sequence[dict[str, Any]]) -> Markup:
    rows = [(tag("td", task_link(task["id"]), class_="num"), status(task["status"]), queue_link(task["queue"]),
             task["key"], f"{task['attempts']}/{task['max_attempts']}", tag("td", _preview(task["args"]),
                                                                             class_="preview"),
             when(task["created_at"]), when(task["finished_at"] or task["started_at"]),
             tag("td", headline(task["last_error"]), class_="preview error"))
            for task in tasks]
    return table(("id", "status", "queue", "key", "attempts", "args", "created", "started / finished", "last error"),
                 rows, empty="no matching tasks")


def newer_banner(newer: int | None, raw: Mapping[str, str]) -> Markup:
    if newer == 0:
        return Markup("")
    link = tag("a", "show them", href="/tasks?" + urlencode(filter_query(raw)))
    text = "More than 10,000 newer tasks" if newer is None else f"{newer:,} newer matching task(s)"
    return tag("p", join([text, ": ", link]), class_="notice")


def list_live_url(raw: Mapping[str, str], tasks: Sequence[dict[str, Any]]) -> str:
    query = {**filter_query(raw), "ids": ",".join(str(task["id"]) for task in tasks)}
    if raw.get("before"):
        query["before"] = raw["before"]
    elif tasks:
        query["top"] = str(tasks[0]["id"])
    return "/live/tasks?" + urlencode(query)


def list_screen(tasks: Sequence[dict[str, Any]], raw: Mapping[str, str], filters: Filters, more: bool,
                viewer: Viewer, newer: int | None = 0) -> Screen:
    chosen = raw.get("status", "")
    options = join(tag("option", label, value=value, selected="selected" if value == chosen else None)
                   for value, label in (("", "any"), *((s, s) for s in STATUSES)))
    query = filter_query(raw)
    more_link = (tag("a", "older →", href="/tasks?" + urlencode({**query, "before": tasks[-1]["id"]}))
                 if more and tasks else Markup(""))
    bulk = []
    for action, (label, statuses) in BULK_ACTIONS.items():
        if viewer.can_act and (filters.status is None or filters.status in statuses):
            bulk.append(tag("a", f"{label} every {' or '.join(statuses)} task matching this filter…",
                            href="/tasks/bulk?" + urlencode({"action": action, **query}), class_="button"))
    values = {"status_options": options, **{name: raw.get(name, "") for name in FILTER_FIELDS if name != "status"},
              "bulk": join([*bulk, sign_in_hint(viewer, "retry or cancel the matching tasks")]), "more": more_link}
    parts = {"newer": newer_banner(newer, raw), "rows": rows_table(tasks)}
    return Screen("Tasks", "tasks.html", parts, values, live=list_live_url(raw, tasks))


def bulk_screen(action: str, statuses: Sequence[str], filters: Filters, raw: Mapping[str, str], matching: int,
                cap: int, viewer: Viewer) -> Screen:
    """The confirmation of a bulk ``action`` on the tasks with ``statuses`` matching ``filters``."""
    label = BULK_ACTIONS[action][0]
    query = filter_query(raw)
    back = tag("a", "Back to the list", href="/tasks?" + urlencode(query))
    if matching == 0:
        text = f"No {' or '.join(statuses)} task matches {describe(filters)}: nothing to {action}."
        return Screen(f"{label} matching tasks", "bulk.html", {}, {"summary": text, "form": "", "back": back})
    over = matching > cap
    shown_count = min(matching, cap)
    text = (f"{'More than ' if over else ''}{shown_count:,} {' or '.join(statuses)} task(s) match {describe(filters)}."
            + (f" One action takes at most {cap:,}, the newest; run it again for the rest." if over else ""))
    verb = f"{label} {shown_count:,} task(s)"
    action_form = form("/tasks/bulk", viewer, verb, {"action": action, **query})
    return Screen(f"{label} matching tasks", "bulk.html", {},
                  {"summary": text, "form": join([action_form, sign_in_hint(viewer, action)]), "back": back})


# -- one task ---------------------------------------------------------------------------------------
def run_time(task: Mapping[str, Any], now: dt.datetime) -> Any:
    """How long its latest attempt ran (or has been running), or when it is due."""
    started, finished = task["started_at"], task["finished_at"]
    if task["status"] == "running" and started is not None:
        return f"running for {format_duration((now - started).total_seconds())}"
    if started is not None and finished is not None and finished >= started:
        return f"ran {format_duration((finished - started).total_seconds())}"
    if task["status"] == "pending" and task["run_at"] is not None:
        return join(["due ", when(task["run_at"])])  # not "due 3s ago": a live part changing every second
    return "-"


def summary(task: Mapping[str, Any], now: dt.datetime, viewer: Viewer) -> Markup:
    facts = [("key", task["key"]), ("queue", queue_link(task["queue"])),
             ("attempts", f"{task['attempts']} of {task['max_attempts']}"), ("run time", run_time(task, now)),
             ("created", when(task["created_at"])), ("started", when(task["started_at"])),
             ("finished", when(task["finished_at"]))]
    if task.get("group_id") is not None:
        facts.append(("group or chain", tag("a", f"#{task['group_id']}", href=f"/groups/{task['group_id']}")))
    if task.get("parent_id") is not None:
        facts.append(("parent", task_link(task["parent_id"])))
    actions = []
    if task["status"] in RETRYABLE:
        actions.append(form(f"/tasks/{task['id']}/retry", viewer, "Retry"))
    if task["status"] in CANCELLABLE:
        actions.append(form(f"/tasks/{task['id']}/cancel", viewer, "Cancel"))
    hint = sign_in_hint(viewer, "retry or cancel it") if task["status"] in (*RETRYABLE, *CANCELLABLE) else ""
    error = headline(task["last_error"]) if task["status"] in ("failed", "pending", "cancelled") else ""
    return join([
        tag("p", join([status(task["status"]), tag("span", error, class_="error") if error else ""]),
            class_="headline"),
        tag("dl", join(join([tag("dt", name), tag("dd", value)]) for name, value in facts), class_="facts"),
        tag("div", join([*actions, hint]), class_="actions"),
    ])


def timeline_table(history: Sequence[Any] | None) -> Markup:
    """The attempts and operator actions, oldest first (`gta_core.attempts`); None: this
    database has no attempt log."""
    if history is None:
        return tag("p", "no attempt log on this table (run `gta migrate`)", class_="empty")
    rows: list[Sequence[Any]] = []
    for entry in history:
        if entry.dropped_before:
            rows.append(("…", "", "", "", "", "", f"{entry.dropped_before:,} entries dropped (attempts_kept)"))
        error: Any = ""
        if entry.exception_class_path or entry.error:
            line = f"{entry.exception_class_path + ': ' if entry.exception_class_path else ''}{entry.error or ''}"
            error = (tag("details", join([tag("summary", _preview(line)), tag("pre", shown(entry.traceback))]))
                     if entry.traceback else _preview(line))
        took = entry.duration
        then = "" if entry.retry_delay is None else f"retry in {format_duration(entry.retry_delay)}"
        rows.append((entry.number, status(entry.outcome), when(entry.started_at or entry.ended_at),
                     "-" if took is None else format_duration(took), entry.worker or entry.actor or "-", then, error))
    return table(("#", "outcome", "at", "took", "worker or operator", "then", "error"), rows, numeric=(0, 3),
                 empty="no attempt yet")


def task_screen(task: Mapping[str, Any], children: Sequence[tuple[int, str, str]], history: Sequence[Any] | None,
                now: dt.datetime, viewer: Viewer) -> Screen:
    child_rows = [(task_link(child_id), key, status(state)) for child_id, key, state in children]
    errors = error_history(task["last_error"])
    error_list = (tag("ol", join(tag("li", tag("pre", shown(error))) for error in errors)) if errors
                  else tag("p", "no error recorded", class_="empty"))
    fields = table(("field", "value"), [(name, when(task[name]) if isinstance(task[name], dt.datetime)
                                         else "" if task[name] is None else task[name]) for name in _OTHER_FIELDS])
    parts = {"summary": summary(task, now, viewer), "timeline": timeline_table(history),
             "children": table(("id", "key", "status"), child_rows, empty="none")}
    values = {"args": pretty(task["args"]), "context": pretty(task["context"]),
              "result": pretty(task["result"]) if task.get("result") is not None else "none",
              "errors": error_list, "fields": fields}
    return Screen(f"Task {task['id']}", "task.html", parts, values, live=f"/live/tasks/{task['id']}")
