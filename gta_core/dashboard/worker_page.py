"""The Workers page: supervisors, their workers and the task each is running, with a cancel
button per task.

Every supervisor sharing the table is in the roster (`gta_core.store.roster`: host, pid, the queues
it serves, the task keys it has handlers for, renewed every third of a lease period). The
running tasks come from their rows (``lease_owner`` is ``host:supervisor-pid.worker-slot:token``;
the owner index holds running rows only), grouped by supervisor and worker; this sidecar's own
supervisor also says how many workers it has alive (its status file).
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from itertools import groupby
from typing import Any

from ..config import format_duration
from ..store.roster import SupervisorState
from .overview import supervisor_table
from .pages import LocalSupervisor, Screen, Viewer, form, owner_parts, queue_link, sign_in_hint, table, task_link
from .queries import RUNNING_SHOWN
from .render import Markup, join, tag, when


def running_tables(tasks: Sequence[dict[str, Any]], now: dt.datetime, viewer: Viewer) -> Markup:
    if not tasks:
        return tag("p", "no task is running", class_="empty")
    sections = []
    for supervisor, owned in groupby(tasks, key=lambda task: owner_parts(task["lease_owner"] or "")[:2]):
        host, pid = supervisor
        rows = []
        for task in owned:
            started = task["started_at"]
            cancel = form(f"/tasks/{task['id']}/cancel", viewer, "Cancel", {"next": "/workers"},
                          name=f"Cancel task {task['id']}", confirm=f"Cancel running task {task['id']}?")
            rows.append((owner_parts(task["lease_owner"] or "")[2] or "-", task_link(task["id"]), task["key"],
                         queue_link(task["queue"]), f"{task['attempts']}/{task['max_attempts']}", when(started),
                         format_duration((now - started).total_seconds()) if started else "-",
                         when(task["lease_expires_at"]),
                         *([cancel] if viewer.can_act else [])))
        title = f"Supervisor {pid} on {host}" if pid else f"Lease owner {host}"
        sections.append(tag("section", join([
            tag("h3", title),
            table(("worker", "task", "key", "queue", "attempt", "started", "running for", "lease until",
                   *(["actions"] if viewer.can_act else [])), rows, numeric=(4, 6))]), class_="supervisor"))
    more = tag("p", f"the first {RUNNING_SHOWN} running tasks are shown", class_="muted") \
        if len(tasks) >= RUNNING_SHOWN else Markup("")
    return join([*sections, more])


def roster_table(roster: Sequence[SupervisorState], tasks: Sequence[dict[str, Any]], now: dt.datetime) -> Markup:
    running: dict[tuple[str, str], int] = {}
    for task in tasks:
        host, pid, _ = owner_parts(task["lease_owner"] or "")
        running[host, pid] = running.get((host, pid), 0) + 1
    rows = [(state.host, state.pid, "live" if state.live else "gone", ", ".join(state.queues),
             tag("span", f"{len(state.keys):,}", title=", ".join(sorted(state.keys))), running.get(
                 (state.host, str(state.pid)), 0), when(state.started_at),
             format_duration((now - state.seen_at).total_seconds()) + " ago" if state.seen_at else "-")
            for state in sorted(roster, key=lambda state: (not state.live, state.host, state.pid))]
    return table(("host", "pid", "state", "queues", "task keys", "running", "started", "last seen"), rows,
                 numeric=(1, 4, 5), empty="no supervisor is in the roster")


def screen(roster: Sequence[SupervisorState], tasks: Sequence[dict[str, Any]], now: dt.datetime,
           local: LocalSupervisor | None, viewer: Viewer) -> Screen:
    parts = {"roster": roster_table(roster, tasks, now), "supervisor": supervisor_table(local),
             "running": running_tables(tasks, now, viewer)}
    return Screen("Workers", "workers.html", parts, {"hint": sign_in_hint(viewer, "cancel running tasks")},
                  live="/live/workers")
