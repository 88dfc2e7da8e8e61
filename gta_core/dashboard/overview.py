"""The overview (``/``): the queue system at a glance, live; and the whole table's counts.

Its live parts cost two statements on the pending and running rows' indexes and one on the
queues table, plus the history's memory; the counts by status read every row, so they are
taken once per view (and may be cut by the time bound, which the page then says).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from ..admin import STATUSES
from ..config import format_duration
from .history import Recent
from .pages import LocalSupervisor, Screen, Viewer, count, form, queue_link, table
from .queries import QueueDepth
from .queue_pages import QueueView, unhandled_notices
from .render import Markup, join, tag, when


def _card(title: str, value: Any, detail: Any = "") -> Markup:
    return tag("div", join([tag("h2", title), tag("p", value, class_="big"), tag("p", detail, class_="muted")]),
               class_="card")


def now_cards(view: QueueView, recent: Recent | None) -> Markup:
    depth = view.depth.values()
    pending, due, running = (sum(getattr(d, field) for d in depth) for field in ("pending", "due", "running"))
    oldest = max((d.oldest_due for d in depth if d.oldest_due is not None), default=None)
    paused = sorted(name for name in view.controls if view.paused(name))
    rate = "-" if recent is None else f"{recent.succeeded_per_minute:,.1f}"
    failing = "" if recent is None else f"{recent.failed_per_minute:,.1f} failed a minute"
    return tag("section", join([
        _card("Pending", count(pending), f"{due:,} due now, {pending - due:,} scheduled later"),
        _card("Running", count(running), tag("a", "see the workers", href="/workers")),
        _card("Oldest due", format_duration(oldest), "waited since it became due"),
        _card("Done a minute", rate, f"{failing} (last 5 minutes)" if failing else ""),
        _card("Paused queues", len(paused), join(queue_link(name) for name in paused[:5]) if paused else "none"),
    ]), class_="cards", aria_label="now")


def supervisor_table(local: LocalSupervisor | None) -> Markup:
    rows = [(local.host, local.pid, when(local.since), f"{local.live}/{local.expected}",
             "-" if local.tasks_run is None else count(local.tasks_run), "ok" if local.healthy else "unhealthy")
            ] if local else []
    return table(("host", "pid", "since", "workers live/expected", "tasks run", "health"), rows, numeric=(1, 4),
                 empty="this sidecar's supervisor has not reported yet")


def whole_table(counts: Mapping[tuple[str, str], int] | None, max_queues: int) -> Markup:
    """Tasks by status and by queue and status, every row counted (once per view)."""
    if counts is None:
        return tag("p", "counting every row took too long: see `gta stats`", class_="notice")
    totals = {status: sum(n for (_, s), n in counts.items() if s == status) for status in STATUSES}
    statuses = table(("status", "tasks"), [(tag("a", status, href="/tasks?" + urlencode({"status": status})),
                                           count(totals[status])) for status in STATUSES], numeric=(1,))
    by_queue = table(("queue", *STATUSES), _queue_rows(counts, max_queues), numeric=tuple(range(1, len(STATUSES) + 1)),
                     empty="no tasks")
    return join([tag("div", statuses, class_="card"), tag("div", by_queue, class_="card wide")])


def _queue_rows(counts: Mapping[tuple[str, str], int], max_queues: int) -> list[tuple[Any, ...]]:
    """A row per queue, the ``max_queues`` with the most tasks by name (whoever submits
    chooses queue names: 20,000 of them made a 10 MB page) and the rest summed in one row."""
    load: dict[str, int] = {}
    for (queue, _), number in counts.items():
        load[queue] = load.get(queue, 0) + number
    ranked = sorted(load, key=lambda queue: (-load[queue], queue))
    named, rest = sorted(ranked[:max_queues]), ranked[max_queues:]
    rows: list[tuple[Any, ...]] = [
        (tag("a", queue, href="/tasks?" + urlencode({"queue": queue})),
         *(count(counts.get((queue, status), 0)) for status in STATUSES)) for queue in named]
    if rest:
        rows.append((f"{len(rest):,} more queues", *(count(sum(counts.get((queue, status), 0) for queue in rest))
                                                     for status in STATUSES)))
    return rows


def purge_form(viewer: Viewer) -> Markup:
    if not viewer.can_act:
        return Markup("")
    choices = join(tag("option", label, value=value) for value, label in
                   (("", "succeeded, failed and cancelled"), *((s, s) for s in ("succeeded", "failed", "cancelled"))))
    inputs = [tag("label", join(["finished more than ", tag("input", name="older_than", value="7d", size="6"),
                                 " ago "])),
              tag("label", join(["status ", tag("select", choices, name="status")]))]
    return tag("section", join([tag("h2", "Purge finished tasks"),
                                form("/purge", viewer, "Purge", confirm="Delete these finished tasks for good?",
                                     inputs=inputs)]), class_="purge")


def screen(view: QueueView, day: Markup, recent: Recent | None, local: LocalSupervisor | None,
           viewer: Viewer, max_queues: int, counts: Mapping[tuple[str, str], int] | None = None,
           full: bool = True) -> Screen:
    """The overview (``day``: the 24-hour charts); ``full`` adds what is read once per view (the
    whole table's counts)."""
    depth_rows = []
    names, more = view.names(max_queues)
    for name in names:
        depth = view.depth.get(name, QueueDepth())
        queue_recent = view.recent.get(name)
        depth_rows.append((queue_link(name), "paused" if view.paused(name) else "active", count(depth.pending),
                           count(depth.running), format_duration(depth.oldest_due),
                           "-" if queue_recent is None else f"{queue_recent.succeeded_per_minute:,.1f}"))
    queues = join([table(("queue", "state", "pending", "running", "oldest due", "done/min"), depth_rows,
                         numeric=(2, 3, 4, 5), empty="no queue yet"),
                   tag("p", f"{more:,} more queues: see Queues", class_="muted") if more else ""])
    parts = {"warnings": unhandled_notices(view.unhandled), "now": now_cards(view, recent), "queues": queues,
             "charts": day,
             "supervisor": supervisor_table(local)}
    values = {"counts": whole_table(counts, max_queues) if full else "", "purge": purge_form(viewer)}
    return Screen("Overview", "overview.html", parts, values, live="/live/")
