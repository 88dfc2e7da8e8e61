"""A group's or a chain's page: its members (or steps, in order) and their states.

A group is one row of ``<table>_groups``: its members carry its id (``group_id``), its
callback waits until they are final. A chain is a row per link (one member, the next step as
its callback), so its page follows the links forward from the callback's own group, and
backward by the group whose callback a step is (`CHAIN_STEPS` links each way at most).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .pages import Screen, count, status, table, task_link
from .queries import MEMBERS_SHOWN
from .render import Markup, join, tag, when


def members_table(group: Mapping[str, Any], members: Sequence[dict[str, Any]],
                  callback: Mapping[str, Any] | None) -> Markup:
    rows = [(task_link(member["id"]), member["key"], status(member["status"]),
             f"{member['attempts']}/{member['max_attempts']}", when(member["finished_at"])) for member in members]
    states: dict[str, int] = {}
    for member in members:
        states[member["status"]] = states.get(member["status"], 0) + 1
    tally = ", ".join(f"{number:,} {state}" for state, number in sorted(states.items()))
    more = (tag("p", f"the first {MEMBERS_SHOWN} members are shown", class_="muted")
            if len(members) >= MEMBERS_SHOWN else "")
    done = group["total"] - max(0, group["remaining"])
    return join([
        tag("p", f"{done:,} of {group['total']:,} members final ({tally or 'none listed'})"),
        table(("member", "key", "status", "attempts", "finished"), rows, numeric=(3,), empty="no member"),
        more,
        tag("h2", "Callback"),
        tag("p", join([task_link(group["callback_id"]), " ", callback["key"], " ", status(callback["status"])])
            if callback and group["callback_id"] is not None else "none"),
    ])


def steps_table(steps: Sequence[tuple[int, dict[str, Any] | None]]) -> Markup:
    rows = [(index + 1, task_link(task_id), task["key"] if task else "(deleted)",
             status(task["status"]) if task else "-") for index, (task_id, task) in enumerate(steps)]
    return table(("step", "task", "key", "status"), rows, numeric=(0,), empty="no step")


def screen(group: Mapping[str, Any], live_part: Markup) -> Screen:
    kind = "Chain" if group["kind"] == "chain" else "Group"
    facts = tag("dl", join(join([tag("dt", name), tag("dd", value)]) for name, value in (
        ("kind", group["kind"]), ("members", count(group["total"])), ("created", when(group["created_at"])),
        ("finished", when(group["finished_at"])))), class_="facts")
    return Screen(f"{kind} {group['id']}", "group.html", {"facts": facts, "members": live_part},
                  live=f"/live/groups/{group['id']}")
