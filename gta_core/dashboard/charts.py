"""The 24-hour charts as inline SVG (no script, no library): throughput, depth and time in queue.

Each chart is one `<figure>`: an SVG of a column per `BUCKET` minutes (289 for a day, which
fits any width: the SVG stretches to its box) and a caption that says in words what it shows and its
peak, which is also the SVG's accessible name. Values come from `history.History`.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

from ..config import format_duration
from .history import Chart
from .render import Markup, join, tag

BUCKET = 5  # minutes per column, aligned to the clock (:00, :05, …)
HEIGHT = 60.0


@dataclasses.dataclass(frozen=True)
class Columns:
    """A chart's per-minute values grouped into `BUCKET`-minute columns."""

    first: int  # the epoch minute the first column starts at
    values: dict[str, list[float | None]]

    @property
    def width(self) -> int:
        return len(next(iter(self.values.values()), []))

    def start(self, column: int) -> str:
        minute = self.first + column * BUCKET
        return f"{dt.datetime.fromtimestamp(minute * 60, dt.timezone.utc):%d %b %H:%M} UTC"


def columns(chart: Chart, fields: Sequence[str], rate: bool) -> Columns:
    """``rate``: each column's mean per minute, a minute without a value counting as 0 (tasks
    finished: the first reading covered the whole day), over the minutes it has had so far;
    else a level: each column's highest value, None where no minute has one."""
    first = chart.first - chart.first % BUCKET
    last = chart.first + len(chart.values[fields[0]]) - 1
    out: dict[str, list[float | None]] = {}
    for field in fields:
        values = chart.values[field]
        grouped: list[float | None] = []
        for start in range(first, last + 1, BUCKET):
            minutes = [values[minute - chart.first] for minute in range(start, min(start + BUCKET, last + 1))
                       if minute >= chart.first]
            known = [value for value in minutes if value is not None]
            if rate:
                grouped.append(sum(known) / len(minutes))
            else:
                grouped.append(max(known) if known else None)
        out[field] = grouped
    return Columns(first, out)


def _figure(title: str, svg_parts: Sequence[Markup], legend: Markup, summary: str, width: int) -> Markup:
    svg = tag("svg", join(svg_parts), class_="chart", viewBox=f"0 0 {width} {HEIGHT:g}",
              preserveAspectRatio="none", role="img", aria_label=f"{title}: {summary}")
    axis = tag("div", join([tag("span", "24 h ago"), tag("span", "now")]), class_="axis", aria_hidden="true")
    return tag("figure", join([tag("figcaption", join([tag("strong", title), " · ", summary])), svg, axis, legend]),
               class_="chart")


def _legend(items: Sequence[tuple[str, str]]) -> Markup:
    keys = (join([tag("span", "■", class_=css, aria_hidden="true"), f" {label} "]) for css, label in items)
    return tag("p", join(keys), class_="legend")


def throughput(chart: Chart) -> Markup:
    """Tasks finished per minute (5-minute means), succeeded below and failed stacked on top."""
    grid = columns(chart, ("succeeded", "failed"), rate=True)
    ok, bad = grid.values["succeeded"], grid.values["failed"]
    totals = [(good or 0.0) + (wrong or 0.0) for good, wrong in zip(ok, bad, strict=True)]
    peak = max(totals, default=0.0)
    scale = HEIGHT / peak if peak else 0.0
    ok_path, bad_path = [], []
    for index, (good, wrong) in enumerate(zip(ok, bad, strict=True)):
        good_h, bad_h = (good or 0.0) * scale, (wrong or 0.0) * scale
        if good_h:
            ok_path.append(f"M{index} {HEIGHT:g}v{-good_h:.2f}h1v{good_h:.2f}z")
        if bad_h:
            bad_path.append(f"M{index} {HEIGHT - good_h:.2f}v{-bad_h:.2f}h1v{bad_h:.2f}z")
    succeeded = sum(value or 0.0 for value in chart.values["succeeded"])
    failed = sum(value or 0.0 for value in chart.values["failed"])
    where = f" at {grid.start(totals.index(peak))}" if peak else ""
    summary = f"{succeeded:,.0f} succeeded and {failed:,.0f} failed in 24 h; peak {peak:,.1f} a minute{where}"
    return _figure("Throughput (tasks per minute)",
                   [tag("path", d="".join(ok_path), class_="ok"), tag("path", d="".join(bad_path), class_="bad")],
                   _legend((("ok", "succeeded"), ("bad", "failed"))), summary, grid.width)


def _steps(values: Sequence[float | None], scale: float) -> str:
    """A step line across each column that has a value, broken where one is missing."""
    path, drawing = [], False
    for index, value in enumerate(values):
        if value is None:
            drawing = False
            continue
        y = HEIGHT - value * scale
        path.append(f"{'V' if drawing else f'M{index} '}{y:.2f}H{index + 1}")
        drawing = True
    return "".join(path)


def lines(chart: Chart, title: str, fields: Sequence[tuple[str, str, str]], unit: str, recorded: bool) -> Markup:
    """Levels over 24 h (each column's highest), one line per ``(field, label, css class)``;
    ``recorded``: values the sidecar records from its start (the caption says since when)."""
    grid = columns(chart, [field for field, _, _ in fields], rate=False)
    peak = max((value for values in grid.values.values() for value in values if value is not None), default=None)
    scale = HEIGHT * 0.95 / peak if peak else 0.0
    paths = [tag("path", d=_steps(grid.values[field], scale), class_=f"line {css}") for field, _, css in fields]
    if peak is None:
        summary = "nothing recorded yet" + (" (recorded from the sidecar's start)" if recorded else "")
    else:
        peaks = [f"{label} peak {_amount(max(known), unit)}" for field, label, _ in fields
                 if (known := [value for value in grid.values[field] if value is not None])]
        since = (f"; recorded since {dt.datetime.fromtimestamp(chart.recorded_since * 60, dt.timezone.utc):%H:%M} UTC"
                 if recorded and chart.recorded_since is not None and chart.recorded_since > chart.first else "")
        summary = ", ".join(peaks) + since
    return _figure(title, paths, _legend([(css, label) for _, label, css in fields]), summary, grid.width)


def _amount(value: float, unit: str) -> str:
    return format_duration(value) if unit == "s" else f"{value:,.0f}"


def day(chart: Chart | None) -> Markup:
    """The three charts of a queue (or of every queue), or a note before the first reading."""
    if chart is None:
        return tag("p", "The charts appear after the sidecar's first reading (a few seconds).", class_="empty")
    return tag("div", join([
        throughput(chart),
        lines(chart, "Depth (tasks)", (("pending", "pending", "pending"), ("running", "running", "running")), "n",
              recorded=True),
        lines(chart, "Time in queue (due to start)", (("wait_p50", "p50", "p50"), ("wait_p95", "p95", "p95")), "s",
              recorded=False),
    ]), class_="charts")
