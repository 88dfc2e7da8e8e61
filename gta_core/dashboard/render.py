"""HTML escaped by default: `string.Template` files whose every value is escaped unless it is
`Markup` (HTML this package built from escaped parts).

Small enough to read whole, which is the point: the dashboard shows task arguments and
error messages written by anyone who can submit a task, so nothing reaches a page unescaped
by accident.
"""
from __future__ import annotations

import datetime as dt
import functools
import html
import string
from collections.abc import Iterable
from importlib import resources
from typing import Any


class Markup(str):
    """Text that is already HTML: inserted as is."""


def escape(value: Any) -> Markup:
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


def join(parts: Iterable[Any], separator: str = "") -> Markup:
    return Markup(separator.join(escape(part) for part in parts))


VOID = frozenset({"input", "br", "meta", "link"})


def tag(element: str, content: Any = "", /, **attributes: Any) -> Markup:
    """``<element attr="…">content</element>``; attribute values are escaped, None leaves one
    out, a trailing underscore is dropped (``class_``) and others become dashes (``data_confirm``)."""
    attrs = "".join(f' {key.rstrip("_").replace("_", "-")}="{escape(value)}"'
                    for key, value in attributes.items() if value is not None)
    if element in VOID:
        return Markup(f"<{element}{attrs}>")
    return Markup(f"<{element}{attrs}>{escape(content)}</{element}>")


def when(moment: dt.datetime | None) -> Markup:
    """A timestamp: UTC ISO text (what a browser without JavaScript shows), which the page's
    script rewrites in the viewer's time zone."""
    if moment is None:
        return Markup("-")
    utc = moment.astimezone(dt.timezone.utc)
    return tag("time", f"{utc:%Y-%m-%d %H:%M:%S} UTC", datetime=utc.isoformat(timespec="seconds"))


@functools.cache
def _template(name: str) -> string.Template:
    return string.Template(resources.files(__package__).joinpath("templates").joinpath(name).read_text("utf-8"))


def render(name: str, **values: Any) -> Markup:
    """The template ``templates/<name>`` with every value escaped (`Markup` kept as is)."""
    return Markup(_template(name).substitute({key: escape(value) for key, value in values.items()}))


def asset(name: str) -> bytes:
    return resources.files(__package__).joinpath("static").joinpath(name).read_bytes()
