"""What a request may ask for, checked: filters, ids, forms, redirect targets, argument searches.

Anything malformed is a `BadInput` naming the field (answered 400); nothing here reads the
database.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, quote

from .. import admin
from ..config import parse_duration
from .queries import Filters

FILTER_LIMIT = 500  # characters of one filter field
MAX_ID = 2**63 - 1  # the id column's largest value
IDS_LIMIT = 100  # ids one live update of a list may name
#: what a redirect target must not hold: controls (browsers drop tab and newline, so ``/\t/x``
#: becomes ``//x``, another host) and backslash (read as ``/``)
_NOT_IN_PATH = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")
_NAMED_VALUE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.DOTALL)


class BadInput(Exception):
    """A malformed filter or form value (HTTP 400)."""


def parse_form(body: bytes) -> dict[str, str]:
    try:
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=100))
    except ValueError:  # more fields than any of our forms has
        raise BadInput("the form has too many fields") from None


def text(values: Mapping[str, str], name: str, limit: int = FILTER_LIMIT) -> str | None:
    """A stripped text field, None when empty; `BadInput` when too long or holding NUL."""
    value = values.get(name, "").strip()
    if len(value) > limit or "\x00" in value:
        raise BadInput(f"{name}: at most {limit:,} characters, none of them NUL")
    return value or None


def parse_filters(values: Mapping[str, str]) -> Filters:
    """The list's filters from query or form fields; `BadInput` names a bad one."""
    status = text(values, "status")
    if status is not None and status not in admin.STATUSES:
        raise BadInput(f"status: must be one of {', '.join(admin.STATUSES)}, not {status!r}")
    args = text(values, "args")
    return Filters(status=status, queue=text(values, "queue"), key=text(values, "key"), error=text(values, "error"),
                   args=None if args is None else args_fragment(args),
                   since=_moment(text(values, "since"), "created from"),
                   until=_moment(text(values, "until"), "created before"))


def args_fragment(search: str) -> str:
    """The text to look for in the arguments' stored JSON (compact, keys sorted, non-ASCII
    escaped): ``name=value`` looks for that argument with that JSON value (``n=5`` finds
    ``{"n":5}``, ``to=bob`` finds ``{"to":"bob"}``); any other text is looked for as it
    would be written inside a JSON string."""
    named = _NAMED_VALUE.fullmatch(search)
    if named is None:
        return json.dumps(search)[1:-1]
    name, value = named.groups()
    try:
        decoded = json.loads(value)
    except ValueError:
        decoded = value
    return json.dumps(name) + ":" + json.dumps(decoded, separators=(",", ":"), sort_keys=True)


def _moment(value: str | None, label: str) -> dt.datetime | None:
    """A UTC ISO time (a zone in the text wins), or a duration meaning that long ago."""
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        try:
            return dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=parse_duration(value))
        except ValueError:
            raise BadInput(f"{label}: give a UTC time like 2026-01-31T12:00 or a duration ago like 2h, "
                           f"not {value!r}") from None
    try:
        return (moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)
    except OverflowError:
        raise BadInput(f"{label}: {value!r} is outside the years 1 to 9999 in UTC") from None


def number(value: str | None) -> int | None:
    """A number written in ASCII digits (``int`` also reads ``²`` or ``١``), or None."""
    return int(value) if value and value.isascii() and value.isdigit() else None


def optional_id(value: str | None, name: str) -> int | None:
    if not value:
        return None
    task_id = number(value)
    if task_id is None or task_id > MAX_ID:
        raise BadInput(f"{name}: must be a task id, not {value!r}")
    return task_id


def id_list(value: str | None, name: str) -> list[int]:
    """Comma-separated task ids (at most `IDS_LIMIT`)."""
    parts = [part for part in (value or "").split(",") if part]
    if len(parts) > IDS_LIMIT:
        raise BadInput(f"{name}: at most {IDS_LIMIT} ids")
    return [task_id for part in parts if (task_id := optional_id(part, name)) is not None]


def local_path(value: str) -> str:
    """Where a redirect may go: a path on this server (``/…``, never ``//host``, a control
    character or a backslash), spaces and non-ASCII characters percent-encoded; anything else
    is ``/``."""
    if not value.startswith("/") or value.startswith("//") or _NOT_IN_PATH.search(value):
        return "/"
    return quote(value, safe="/?#[]@!$&'()*+,;=:%~")
