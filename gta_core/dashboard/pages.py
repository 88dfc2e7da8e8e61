"""The pieces every page is made of, as HTML: the frame, forms, tables, statuses, durations.

No SQL and no HTTP here. Every value from the database goes through `render` (escaped); only
HTML built here from escaped parts is `Markup`. A page is a `Screen`: a template, its fixed
values, and its *parts*, the pieces the page's script refreshes in place (`live`), which are
rendered by the same code for the first view and for every update.

Buttons appear only for a viewer who may act: a read-only viewer sees none that the server
would refuse (the server refuses such a request anyway).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from ..store.sql.statements import RERUN_ERROR_PREFIX
from .queries import SHOWN
from .render import Markup, join, render, tag

ARGS_SHOWN = SHOWN  # characters of args/context/errors shown on a task's page
NAV = (("/", "Overview"), ("/queues", "Queues"), ("/workers", "Workers"), ("/tasks", "Tasks"))



@dataclasses.dataclass(frozen=True)
class Viewer:
    """What the page may offer: actions need a token configured and a signed-in browser."""

    can_act: bool
    token_configured: bool
    csrf: str = ""  # a fresh CSRF value for this page's forms (empty unless signed in)
    here: str = "/"  # the page's path and query, where a sign-in comes back to


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


@dataclasses.dataclass(frozen=True)
class Screen:
    """A page: its title, template and fixed values, and its live ``parts`` (name → HTML),
    which `live` re-renders; ``live`` is the URL of those updates (None: a page that stays)."""

    title: str
    template: str
    parts: Mapping[str, Markup]
    values: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    live: str | None = None

    def body(self, viewer: Viewer) -> Markup:
        """The page's body; each part in a ``<div data-part>`` with its digest (`digest`)."""
        wrapped = {name: tag("div", content, data_part=name, data_digest=digest(content, viewer))
                   for name, content in self.parts.items()}
        return render(self.template, **self.values, **wrapped)


def digest(html: Markup, viewer: Viewer) -> str:
    """A part's fingerprint for live updates, blind to the page's CSRF value (fresh in every render)."""
    text = html.replace(viewer.csrf, "") if viewer.csrf else html
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def page(title: str, body: Markup, viewer: Viewer, table: str, notice: str | None = None, error: bool = False,
         live: str | None = None, search: str = "") -> Markup:
    if viewer.can_act:
        who = join([tag("span", "signed in: actions allowed "), form("/signout", viewer, "Sign out")])
    elif viewer.token_configured:
        who = tag("a", "Sign in for actions", href="/signin?" + urlencode({"next": viewer.here}))
    else:
        who = tag("span", "read-only (no dashboard token set)")
    path = viewer.here.partition("?")[0]
    nav = join(tag("a", label, href=href, aria_current="page" if _current(path, href) else None)
               for href, label in NAV)
    shown = tag("p", notice, class_="notice error" if error else "notice", role="alert" if error else "status") \
        if notice else ""
    main = tag("main", join([tag("h1", title), shown, body]), id="main", data_live=live)
    return render("base.html", title=title, nav=nav, who=who, main=main, table=table, search=search)


def _current(path: str, href: str) -> bool:
    if href == "/":
        return path == "/"
    return path == href or path.startswith(href + "/") or (href == "/queues" and path == "/queue")


def form(action: str, viewer: Viewer, label: str, fields: Mapping[str, Any] | None = None,
         confirm: str | None = None, name: str | None = None, inputs: Sequence[Markup] = ()) -> Markup:
    """A POST form with its CSRF value and a button (``name``: its accessible name when the
    label alone is ambiguous, as "Cancel" beside many tasks), or nothing for a viewer who
    cannot act. ``confirm`` asks the browser first (with JavaScript)."""
    if not viewer.can_act:
        return Markup("")
    hidden = [tag("input", type="hidden", name=key, value=value) for key, value in (fields or {}).items()
              if value not in (None, "")]
    hidden.append(tag("input", type="hidden", name="csrf", value=viewer.csrf))
    button = tag("button", label, type="submit", aria_label=name)
    return tag("form", join([*hidden, *inputs, button]), method="post", action=action, data_confirm=confirm,
               class_="action")


def sign_in_hint(viewer: Viewer, what: str) -> Markup:
    """Where a signed-in viewer would see buttons: how to get them, if one can."""
    if viewer.can_act or not viewer.token_configured:
        return Markup("")
    return tag("p", join([tag("a", "Sign in", href="/signin?" + urlencode({"next": viewer.here})), f" to {what}."]),
               class_="hint")


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = (),
          empty: str = "none", caption: str | None = None) -> Markup:
    rows = list(rows)
    if not rows:
        return tag("p", empty, class_="empty")
    head = tag("tr", join(tag("th", name, scope="col", class_="num" if index in numeric else None)
                          for index, name in enumerate(header)))
    body = join(tag("tr", join(cell if isinstance(cell, Markup) and str(cell).startswith("<td")
                               else tag("td", cell, class_="num" if index in numeric else None)
                               for index, cell in enumerate(row))) for row in rows)
    return tag("table", join([tag("caption", caption) if caption else "", tag("thead", head), tag("tbody", body)]))


def status(value: str) -> Markup:
    return tag("span", value, class_=f"status status-{value}")


def count(value: int) -> str:
    return f"{value:,}"


def task_link(task_id: int) -> Markup:
    return tag("a", task_id, href=f"/tasks/{task_id}")


def queue_link(queue: str) -> Markup:
    return tag("a", queue, href="/queue?" + urlencode({"name": queue}))


def owner_parts(owner: str) -> tuple[str, str, str]:
    """``host:pid.slot:token`` → (host, pid, slot); an owner of another form shown whole."""
    host, _, rest = owner.rpartition(":")[0].rpartition(":")
    pid, _, slot = rest.partition(".")
    return (host, pid, slot) if host and pid.isdigit() else (owner, "", "")


def pretty(text: str | None) -> str:
    """JSON text indented (as stored when it is not JSON), cut at `ARGS_SHOWN` characters."""
    if text is None:
        return "null"
    try:
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False, sort_keys=True)
    except (ValueError, RecursionError):  # not JSON (cut at ARGS_SHOWN, or written by hand), or nested too deep
        pass
    return shown(text)


def shown(text: str) -> str:
    length = getattr(text, "length", len(text))  # `Clipped` by the query: its whole value's
    return text if length <= ARGS_SHOWN else text[:ARGS_SHOWN] + f"\n… (cut: {length:,} characters in all)"


def headline(last_error: str | None) -> str:
    """An error's first line, ``Type: message`` as the worker records it (the traceback stays
    on the task's page); an operator's retry is said, with the error it followed."""
    if not last_error:
        return ""
    text, retried = last_error, False
    while text.startswith(RERUN_ERROR_PREFIX):
        text, retried = text[len(RERUN_ERROR_PREFIX):], True
    line = text.strip().split("\n", 1)[0].strip()
    return f"retried; before: {line}" if retried else line


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
