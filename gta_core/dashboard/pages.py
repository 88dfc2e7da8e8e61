"""The dashboard's pages as HTML, from what `queries` read: no SQL and no HTTP here.

Every value from the database goes through `render` (escaped); only HTML built here from
escaped parts is `Markup`.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from ..admin import RETRYABLE, STATUSES
from ..attempts import Attempt
from ..roster import Unhandled
from ..sql import RERUN_ERROR_PREFIX
from .queries import PREVIEW, SHOWN, Filters
from .render import Markup, join, render, tag, when

CHART_MINUTES = 60
#: warnings of tasks no live supervisor handles shown on the overview (the most waiting first)
UNHANDLED_SHOWN = 20
ARGS_SHOWN = SHOWN  # characters of args/context/errors shown on a task's page


@dataclasses.dataclass(frozen=True)
class Viewer:
    """What the page may offer: actions need a token configured and a signed-in browser."""

    can_act: bool
    token_configured: bool
    csrf: str = ""  # a fresh CSRF value for this page's forms (empty unless signed in)


@dataclasses.dataclass(frozen=True)
class LocalSupervisor:
    """This sidecar's supervisor, from its status file and the workers' metric files."""

    host: str
    pid: int
    since: dt.datetime | None
    live: int
    expected: int
    tasks_run: int | None
    healthy: bool


def page(title: str, body: Markup, viewer: Viewer, table: str, notice: str | None = None,
         error: bool = False) -> Markup:
    if viewer.can_act:
        who = Markup(tag("span", "signed in: actions allowed ") + _form("/signout", viewer, "Sign out"))
    elif viewer.token_configured:
        who = tag("a", "Sign in for actions", href="/signin")
    else:
        who = tag("span", "read-only (no dashboard token set)")
    shown = tag("p", notice, class_="notice error" if error else "notice") if notice else ""
    return render("base.html", title=title, who=who, notice=shown, body=body, table=table)


def _form(action: str, viewer: Viewer, label: str, fields: Mapping[str, Any] | None = None,
          confirm: str | None = None) -> Markup:
    """A POST form with its CSRF value; its button is disabled for a viewer who cannot act (the
    server refuses such a request anyway)."""
    hidden = [tag("input", type="hidden", name=name, value=value) for name, value in (fields or {}).items()
              if value not in (None, "")]
    hidden.append(tag("input", type="hidden", name="csrf", value=viewer.csrf))
    button = tag("button", label, type="submit", disabled="disabled" if not viewer.can_act else None,
                 title=None if viewer.can_act else "sign in with the dashboard token to act")
    return tag("form", join([*hidden, button]), method="post", action=action, data_confirm=confirm)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = (),
           empty: str = "none") -> Markup:
    rows = list(rows)
    if not rows:
        return tag("p", empty, class_="empty")
    head = tag("tr", join(tag("th", name, class_="num" if index in numeric else None)
                          for index, name in enumerate(header)))
    body = join(tag("tr", join(cell if isinstance(cell, Markup) and str(cell).startswith("<td")
                               else tag("td", cell, class_="num" if index in numeric else None)
                               for index, cell in enumerate(row))) for row in rows)
    return tag("table", join([tag("thead", head), tag("tbody", body)]))


def _status(status: str) -> Markup:
    return tag("span", status, class_=f"status-{status}")


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


# -- overview ------------------------------------------------------------------------------------
def overview(counts: Mapping[tuple[str, str], int] | None, finished: Sequence[tuple[str, str, int]], now: dt.datetime,
             oldest: Mapping[str, float], local: LocalSupervisor | None, running: Mapping[str, int],
             viewer: Viewer, max_queues: int, unhandled: Sequence[Unhandled] = ()) -> Markup:
    if counts is None:
        uncounted = tag("p", "counting every row took too long: see `gta stats`", class_="notice")
        statuses = by_queue = uncounted
    else:
        totals = {status: sum(n for (_, s), n in counts.items() if s == status) for status in STATUSES}
        statuses = _table(("status", "tasks"), [(tag("a", status, href="/tasks?" + urlencode({"status": status})),
                                                totals[status]) for status in STATUSES], numeric=(1,))
        by_queue = _table(("queue", *STATUSES, "oldest due"), _queue_rows(counts, oldest, max_queues),
                          numeric=tuple(range(1, len(STATUSES) + 2)), empty="no tasks")
    chart, succeeded, failed = throughput_chart(finished, now)
    rate = f"{100 * failed / (succeeded + failed):.1f}%" if succeeded + failed else "-"
    supervisors = _table(("host", "pid", "since", "workers live/expected", "tasks run", "health"),
                         [(local.host, local.pid, when(local.since), f"{local.live}/{local.expected}",
                           "-" if local.tasks_run is None else local.tasks_run,
                           "ok" if local.healthy else "unhealthy")] if local else [],
                         numeric=(1, 4), empty="this sidecar's supervisor has not reported yet")
    workers = _table(("host", "supervisor pid", "worker", "running tasks"),
                     [(*_owner_parts(owner), count) for owner, count in sorted(running.items())],
                     numeric=(1, 3), empty="no task is running")
    warnings = join([*(tag("p", join([group.describe() + " (",
                                      tag("a", "list them", href="/tasks?" + urlencode(
                                          {"status": "pending", "queue": group.queue, "key": group.key})), ")"]),
                           class_="notice unhandled") for group in unhandled[:UNHANDLED_SHOWN]),
                     *([tag("p", f"and {len(unhandled) - UNHANDLED_SHOWN} more task keys and queues that no live "
                                 "supervisor handles: see `gta stats`", class_="notice unhandled")]
                       if len(unhandled) > UNHANDLED_SHOWN else [])])
    body = render("overview.html", warnings=warnings, statuses=statuses, chart=chart, succeeded=succeeded,
                  failed=failed, failure_rate=rate, oldest=age(max(oldest.values(), default=None)), queues=by_queue,
                  supervisors=supervisors, workers=workers)
    purge = tag("section", join([
        tag("h2", "Purge finished tasks"),
        _purge_form(viewer)]), class_="purge")
    return Markup(body + purge)


def _queue_rows(counts: Mapping[tuple[str, str], int], oldest: Mapping[str, float],
                max_queues: int) -> list[tuple[Any, ...]]:
    """A row per queue, the ``max_queues`` with the most tasks by name (whoever submits
    chooses queue names: 20,000 of them made a 10 MB page) and the rest summed in one row."""
    load: dict[str, int] = {}
    for (queue, _), count in counts.items():
        load[queue] = load.get(queue, 0) + count
    ranked = sorted(load, key=lambda queue: (-load[queue], queue))
    named, rest = sorted(ranked[:max_queues]), ranked[max_queues:]
    rows: list[tuple[Any, ...]] = [
        (tag("a", queue, href="/tasks?" + urlencode({"queue": queue})),
         *(counts.get((queue, status), 0) for status in STATUSES), age(oldest.get(queue))) for queue in named]
    if rest:
        rows.append((f"{len(rest):,} more queues", *(sum(counts.get((queue, status), 0) for queue in rest)
                                                     for status in STATUSES),
                     age(max((oldest[queue] for queue in rest if queue in oldest), default=None))))
    return rows


def _purge_form(viewer: Viewer) -> Markup:
    choices = join(tag("option", label, value=value) for value, label in
                   (("", "succeeded, failed and cancelled"), *((s, s) for s in ("succeeded", "failed", "cancelled"))))
    fields = join([tag("label", join(["finished more than ", tag("input", name="older_than", value="7d", size="6"),
                                      " ago "])),
                   tag("label", join(["status ", tag("select", choices, name="status")])),
                   tag("input", type="hidden", name="csrf", value=viewer.csrf),
                   tag("button", "Purge", type="submit", disabled=None if viewer.can_act else "disabled")])
    return tag("form", fields, method="post", action="/purge", data_confirm="Delete these finished tasks for good?")


def _owner_parts(owner: str) -> tuple[str, str, str]:
    """``host:pid.slot:token`` → (host, pid, slot); an owner of another form shown whole."""
    host, _, rest = owner.rpartition(":")[0].rpartition(":")
    pid, _, slot = rest.partition(".")
    return (host, pid, slot) if host and pid.isdigit() else (owner, "", "")


def throughput_chart(finished: Sequence[tuple[str, str, int]], now: dt.datetime) -> tuple[Markup, int, int]:
    """An inline SVG of tasks finished per minute over the last hour (succeeded green, failed
    red on top); also the hour's totals."""
    minutes = [f"{now - dt.timedelta(minutes=back):%Y-%m-%d %H:%M}" for back in range(CHART_MINUTES - 1, -1, -1)]
    ok = dict.fromkeys(minutes, 0)
    bad = dict.fromkeys(minutes, 0)
    for minute, status, count in finished:
        if minute in ok and status == "succeeded":
            ok[minute] = count
        elif minute in bad and status == "failed":
            bad[minute] = count
    peak = max([ok[m] + bad[m] for m in minutes] + [1])
    width, height, bar = 5, 60, 4
    bars = []
    for index, minute in enumerate(minutes):
        good_h, bad_h = height * ok[minute] / peak, height * bad[minute] / peak
        x = index * width
        bars.append(tag("g", join([
            tag("title", f"{minute} UTC: {ok[minute]} succeeded, {bad[minute]} failed"),
            tag("rect", x=x, y=f"{height - good_h:.1f}", width=bar, height=f"{good_h:.1f}", class_="ok"),
            tag("rect", x=x, y=f"{height - good_h - bad_h:.1f}", width=bar, height=f"{bad_h:.1f}", class_="bad")])))
    right = CHART_MINUTES * width
    axis = join([tag("text", "-60m", x=0, y=height + 12), tag("text", "now", x=right - 18, y=height + 12),
                 tag("text", f"peak {peak}/min", x=0, y=10)])
    svg = tag("svg", join([*bars, axis]), class_="chart", viewBox=f"0 0 {right} {height + 14}",
              width=right, height=height + 14, role="img", aria_label="tasks finished per minute over the last hour")
    return svg, sum(ok.values()), sum(bad.values())


# -- the task list -------------------------------------------------------------------------------
def filter_query(filters: Filters, raw: Mapping[str, str]) -> dict[str, str]:
    """The filter fields as the user typed them (for links and hidden fields)."""
    return {name: raw[name] for name in ("status", "queue", "key", "error", "since", "until") if raw.get(name)}


def task_list(tasks: Sequence[dict[str, Any]], raw: Mapping[str, str], filters: Filters, more: bool,
              viewer: Viewer) -> Markup:
    chosen = raw.get("status", "")
    options = join(tag("option", label, value=value, selected="selected" if value == chosen else None)
                   for value, label in (("", "any"), *((s, s) for s in STATUSES)))
    rows = [(tag("td", tag("a", task["id"], href=f"/tasks/{task['id']}"), class_="num"), _status(task["status"]),
             task["queue"], task["key"], f"{task['attempts']}/{task['max_attempts']}",
             tag("td", _preview(task["args"]), class_="preview"), when(task["created_at"]),
             when(task["finished_at"]), tag("td", _preview(task["last_error"]), class_="preview"))
            for task in tasks]
    table = _table(("id", "status", "queue", "key", "attempts", "args", "created", "finished", "last error"),
                   rows, empty="no matching tasks")
    query = filter_query(filters, raw)
    more_link = (tag("a", "older →", href="/tasks?" + urlencode({**query, "before": tasks[-1]["id"]}))
                 if more and tasks else Markup(""))
    bulk = Markup("")
    if filters.status in RETRYABLE or filters.status is None:
        bulk = tag("div", _form("/tasks/retry", viewer, "Retry every failed or cancelled task matching this filter",
                                query, confirm="Retry every failed or cancelled task matching this filter?"),
                   class_="bulk")
    return render("tasks.html", status_options=options, queue=raw.get("queue", ""), key=raw.get("key", ""),
                  error=raw.get("error", ""), since=raw.get("since", ""), until=raw.get("until", ""),
                  bulk=bulk, table=table, more=more_link)


def _preview(text: str | None) -> str:
    if not text:
        return ""
    return text if len(text) <= PREVIEW else text[:PREVIEW] + "… (cut)"


# -- one task ---------------------------------------------------------------------------------
def task_detail(task: dict[str, Any], children: Sequence[tuple[int, str, str]], viewer: Viewer,
                history: Sequence[Attempt] = ()) -> Markup:
    fields = []
    for column, value in task.items():
        if column in ("args", "context", "last_error"):
            continue
        if isinstance(value, dt.datetime):
            shown: Any = when(value)
        elif column == "parent_id" and value is not None:
            shown = tag("a", value, href=f"/tasks/{value}")
        elif column == "status":
            shown = _status(value)
        else:
            shown = "" if value is None else value
        fields.append(tag("tr", join([tag("th", column), tag("td", shown)])))
    actions = []
    if task["status"] in RETRYABLE:
        actions.append(_form(f"/tasks/{task['id']}/retry", viewer, "Retry"))
    if task["status"] in ("pending", "running"):
        actions.append(_form(f"/tasks/{task['id']}/cancel", viewer, "Cancel"))
    errors = error_history(task["last_error"])
    error_list = (tag("ol", join(tag("li", tag("pre", _shown(error))) for error in errors)) if errors
                  else tag("p", "no error recorded"))
    child_rows = [(tag("a", child_id, href=f"/tasks/{child_id}"), key, _status(status))
                  for child_id, key, status in children]
    return render("task.html", actions=join(actions), fields=join(fields), args=pretty(task["args"]),
                  context=pretty(task["context"]), errors=error_list, attempts=attempt_table(history),
                  children=_table(("id", "key", "status"), child_rows, empty="none"))


def attempt_table(history: Sequence[Attempt]) -> Markup:
    """A task's attempts and operator actions in order: number, outcome, worker, start,
    duration, who acted, the error (its traceback folded under it) and the retry delay."""
    rows: list[Sequence[Any]] = []
    for entry in history:
        if entry.dropped_before:
            rows.append(("…", "", "", "", "", "", f"{entry.dropped_before} entries dropped (attempts_kept)", ""))
        error: Any = ""
        if entry.exception_class_path or entry.error:
            headline = f"{entry.exception_class_path + ': ' if entry.exception_class_path else ''}{entry.error or ''}"
            error = (tag("details", join([tag("summary", _preview(headline)), tag("pre", _shown(entry.traceback))]))
                     if entry.traceback else _preview(headline))
        took = entry.duration
        at = entry.started_at or entry.ended_at
        rows.append((entry.number, _status(entry.outcome), entry.worker or "-", when(at),
                     "-" if took is None else f"{took:.3f}s", entry.actor or "-", error,
                     "-" if entry.retry_delay is None else f"{entry.retry_delay:.3g}s"))
    return _table(("#", "outcome", "worker", "at", "took", "by", "error", "retry in"), rows, numeric=(0, 4),
                  empty="no attempt yet")


def pretty(text: str | None) -> str:
    """JSON text indented (as stored when it is not JSON), cut at `ARGS_SHOWN` characters."""
    if text is None:
        return "null"
    try:
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False, sort_keys=True)
    except (ValueError, RecursionError):  # not JSON (cut at ARGS_SHOWN, or written by hand), or nested too deep
        pass
    return _shown(text)


def _shown(text: str) -> str:
    length = getattr(text, "length", len(text))  # `Clipped` by the query: its whole value's
    return text if length <= ARGS_SHOWN else text[:ARGS_SHOWN] + f"\n… (cut: {length:,} characters in all)"


def error_history(last_error: str | None) -> list[str]:
    """The errors a task recorded, oldest first: each operator retry keeps the previous error
    behind `RERUN_ERROR_PREFIX` in last_error, so the chain unrolls into a history."""
    history: list[str] = []
    text = last_error
    while text:
        if text.startswith(RERUN_ERROR_PREFIX):
            text = text[len(RERUN_ERROR_PREFIX):]
            continue
        head, marker, rest = text.partition(RERUN_ERROR_PREFIX)
        if head.strip():
            history.append(head.strip())
        text = rest if marker else ""
    return list(reversed(history)) if history else []


def signin(next_path: str) -> Markup:
    return render("signin.html", next=next_path)
