"""Property: whatever `submit` / `submit_many` are given, the task is either stored exactly as
given or refused with a `GTAError` whose message names the problem, and then nothing was
written and the caller's transaction is still usable (a good task submitted after it commits).

Complements tests/db/test_submit.py (argument values): here every option varies at once, with
values at and beyond what each database column holds.
"""
from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, example, given, settings

import gta_core
from gta_core.submit import TaskRequest

from ..support.helpers import Env

pytestmark = pytest.mark.chaos

OPTIONS = ("delay", "run_at", "priority", "queue", "dedupe_key", "order_key", "max_attempts", "context")
UTC = dt.timezone.utc


def row_count(env: Env) -> int:
    return int(env.runtime.db.execute_sql(f"SELECT COUNT(*) FROM {env.table}").fetchone()[0])


# -- strategies ---------------------------------------------------------------------------------
class Deep(dict):  # type: ignore[type-arg]
    """``{"n": [[[...1...]]]}`` nested ``depth`` lists deep, printed short by hypothesis."""

    def __init__(self, depth: int) -> None:
        value: Any = 1
        for _ in range(depth):
            value = [value]
        super().__init__(n=value)
        self.depth = depth

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(f"Deep({self.depth})")


scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats() | st.text(max_size=12) | st.sampled_from(["\x00", "\ud800", "caf\u00e9 \U0001f600", ""])
           | st.binary(max_size=3) | st.tuples(st.integers()) | st.dates() | st.builds(object))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=4) | st.integers(), inner, max_size=3), max_leaves=8)
args = st.one_of(
    st.builds(lambda value: {"n": value}, values),
    st.dictionaries(st.text(max_size=4), values, max_size=2),
    st.sampled_from([500, 990, 1000, 1100, 5000, 100_000]).map(Deep),
    st.builds(lambda size: {"n": "x" * size}, st.sampled_from([10_000, 1_000_000])),
    st.sampled_from([{"n": 10**4000}, {"n": 10**5000}, {"n": 2**63}, {"n": -(2**64)}]),
    values,
)
names = st.one_of(st.none(), st.text(max_size=8), st.text(min_size=185, max_size=200),
                  st.text(max_size=3).map("a{} ".format),
                  st.sampled_from(["default", "q\x00", "\ud800", " padded ", "\U0001f600" * 191, "x" * 191]),
                  st.integers(), st.binary(max_size=3))
big_ints = st.one_of(st.none(), st.integers(-5, 5), st.booleans(), st.floats(), st.text(max_size=3),
                     st.sampled_from([2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63, 10**400]))
moments = st.one_of(
    st.none(), st.datetimes(timezones=st.none()),
    st.datetimes(timezones=st.sampled_from([UTC, dt.timezone(dt.timedelta(hours=14)),
                                            dt.timezone(dt.timedelta(hours=-12, minutes=-59))])),
    st.sampled_from([dt.datetime.max.replace(tzinfo=dt.timezone(dt.timedelta(hours=-1))),
                     dt.datetime.min.replace(tzinfo=dt.timezone(dt.timedelta(hours=1))),
                     dt.datetime(2030, 1, 1, tzinfo=UTC), "2030-01-01T00:00:00Z", 1_900_000_000, dt.date(2030, 1, 1)]),
)
delays = st.one_of(st.none(), st.floats(), st.integers(-5, 10**6), st.booleans(), st.text(max_size=3),
                   st.sampled_from([10**400, 2**63, 1e300, 1e12, dt.timedelta.max, dt.timedelta(seconds=-1),
                                    dt.timedelta(days=365 * 200), dt.timedelta(minutes=5), math.nan, math.inf])
                   | st.timedeltas())
contexts = st.one_of(st.none(), st.dictionaries(st.text(max_size=4) | st.integers(), values, max_size=2),
                     st.sampled_from([[1, 2], "ctx", 42, {"request_id": "r-1"}]))
options = st.fixed_dictionaries({}, optional={
    "delay": delays, "run_at": moments, "priority": big_ints, "queue": names, "dedupe_key": names,
    "order_key": names, "max_attempts": big_ints, "context": contexts,
})
keys = st.one_of(st.sampled_from(["record", "record", "greet", "no_such_task", ""]), st.integers(), st.none())


# -- what the stored row must say -----------------------------------------------------------------
def assert_stored(env: Env, task_id: int, key: str, task_args: Any, opts: dict[str, Any]) -> None:
    row = env.store.get(task_id)
    assert row is not None
    definition = env.runtime.plugins.registry.get(key)
    assert (row["key"], row["status"], row["attempts"]) == (key, "pending", 0)
    assert json.loads(row["args"]) == ({} if task_args is None else task_args)
    assert row["queue"] == (definition.queue if opts.get("queue") is None else opts["queue"])
    assert row["priority"] == (definition.priority if opts.get("priority") is None else opts["priority"])
    assert row["max_attempts"] == (definition.max_attempts if opts.get("max_attempts") is None
                                   else opts["max_attempts"])
    assert (row["dedupe_key"], row["order_key"]) == (opts.get("dedupe_key"), opts.get("order_key"))
    context = json.loads(row["context"]) if row["context"] else {}
    assert context == (opts.get("context") or {})
    if opts.get("run_at") is not None:
        assert row["run_at"] == opts["run_at"]
    elif opts.get("delay"):
        delay = opts["delay"]
        seconds = delay.total_seconds() if isinstance(delay, dt.timedelta) else delay
        assert row["run_at"] - row["created_at"] >= dt.timedelta(seconds=seconds) - dt.timedelta(seconds=1)


def assert_refusal_names_the_problem(exc: gta_core.GTAError) -> None:
    message = str(exc)
    assert message and "\n" not in message
    assert isinstance(exc, gta_core.SubmitError), type(exc)


#: dedupe keys stored so far, per table: resubmitting one returns the kept row's id
KEPT: dict[str, dict[str, int]] = {}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@example(key="record", task_args={"n": 1}, opts={"priority": 2**31})
@example(key="record", task_args={"n": 1}, opts={"max_attempts": 2**31})
@example(key="record", task_args={"n": 1}, opts={"delay": 1e300})
@example(key="record", task_args={"n": 1}, opts={"delay": 10**400})
@example(key="record", task_args=Deep(100_000), opts={})
@example(key="record", task_args={"n": 1}, opts={"run_at": dt.datetime.min.replace(tzinfo=dt.timezone.max)})
@example(key="record", task_args={"n": 1}, opts={"queue": "q\x00"})
@example(key="record", task_args={"n": 1}, opts={"dedupe_key": "\ud800"})
@example(key="record", task_args={"n": 1}, opts={"context": [1, 2]})
@example(key="record", task_args={"n": 1}, opts={"run_at": dt.datetime(999, 12, 31, tzinfo=UTC)})
@example(key="record", task_args={"n": 1}, opts={"context": {1: "one"}})
@given(key=keys, task_args=args, opts=options)
def test_submit_stores_exactly_or_refuses_and_writes_nothing(env: Env, key: Any, task_args: Any,
                                                             opts: dict[str, Any]) -> None:
    """Between two good submits in one transaction: stored exactly, or refused with nothing
    written and the transaction still usable (on PostgreSQL a failed statement would abort it)."""
    db = env.runtime.db
    before = row_count(env)
    refused: gta_core.GTAError | None = None
    with db.atomic() as tx:
        first = gta_core.submit(tx, "record", {"n": 0})
        try:
            task_id = gta_core.submit(tx, key, task_args, **opts)
        except gta_core.GTAError as exc:
            refused = exc
        last = gta_core.submit(tx, "record", {"n": 0})  # the transaction is still usable
    assert env.statuses([first, last]) == {first: "pending", last: "pending"}
    if refused is not None:
        assert_refusal_names_the_problem(refused)
        assert row_count(env) == before + 2
        return
    kept = KEPT.setdefault(env.table, {})
    dedupe_key = opts.get("dedupe_key")
    if dedupe_key in kept:
        assert (task_id, row_count(env)) == (kept[dedupe_key], before + 2)
        return
    assert row_count(env) == before + 3
    assert_stored(env, task_id, key, task_args, opts)
    if dedupe_key is not None:
        kept[dedupe_key] = task_id


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=st.lists(st.one_of(
    st.builds(TaskRequest, key=keys, args=args, **{name: strategy for name, strategy in (
        ("delay", delays), ("priority", big_ints), ("queue", names), ("max_attempts", big_ints))}),
    st.tuples(keys, args), st.tuples(keys), st.just(("record", {"n": 1}, None)), st.just(["record", {}]),
    st.just(42), st.just("record"), st.none(),
    st.builds(TaskRequest, key=st.just("record"), parent_id=st.one_of(st.text(max_size=2), st.integers(), st.floats())),
), max_size=4))
def test_submit_many_stores_all_or_refuses_all(env: Env, items: list[Any]) -> None:
    """Any item (a request with bad options, a tuple of any length, not a request at all)."""
    before = row_count(env)
    try:
        ids = gta_core.submit_many(gta_core.OWN_TRANSACTION, items)
    except gta_core.GTAError as exc:
        assert_refusal_names_the_problem(exc)
        assert row_count(env) == before
        return
    assert len(ids) == len(items) and row_count(env) == before + len(items)
    for task_id, item in zip(ids, items, strict=True):
        request = item if isinstance(item, TaskRequest) else TaskRequest(*item)
        stored = env.store.get(task_id)
        assert stored is not None and stored["key"] == request.key
        assert json.loads(stored["args"]) == ({} if request.args is None else request.args)


def test_keys_differing_only_in_trailing_spaces_are_refused(env: Env) -> None:
    """MariaDB compares 'k ' equal to 'k': accepted, it would return another task's id."""
    kept = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1}, dedupe_key="k")
    for option in ("dedupe_key", "order_key", "queue"):
        with pytest.raises(gta_core.InvalidArguments, match=option):
            gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 2}, **{option: "k "})
    assert row_count(env) == 1 and gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1}, dedupe_key="k") == kept


def test_run_at_before_the_year_1000_is_due_and_reads_back(env: Env) -> None:
    """SQLite compares timestamps as text: '999-…' (strftime's %Y) sorted after every real date."""
    long_ago = dt.datetime(999, 12, 31, 23, 59, 59, 1, tzinfo=UTC)
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1}, run_at=long_ago)
    stored = env.store.get(task_id)
    assert stored is not None and stored["run_at"] == long_ago
    assert [task.id for task in env.store.lease("probe", ("default",), 5, 30.0)] == [task_id]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(task_ids=2**70)
@example(task_ids="12")
@example(task_ids=None)
@given(task_ids=st.one_of(big_ints, st.lists(big_ints | st.integers(), max_size=3), st.text(max_size=3),
                          st.tuples(st.integers())))
def test_cancel_takes_ids_or_names_the_problem(env: Env, task_ids: Any) -> None:
    """`gta_core.cancel` with anything for ids: a dict of the given ids it found, or a `GTAError`;
    either way no task it was not given changes."""
    gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1}, delay=3600)
    everything = [row[0] for row in env.runtime.db.execute_sql(f"SELECT id FROM {env.table}").fetchall()]
    before = env.statuses(everything)
    given_ids: set[Any] = set()
    try:
        found = gta_core.cancel(task_ids)
        given_ids = {task_ids} if isinstance(task_ids, int) else set(task_ids)
    except gta_core.GTAError as exc:
        assert str(exc) and "\n" not in str(exc)
        assert env.statuses(everything) == before
        return
    assert isinstance(found, dict) and set(found) <= given_ids
    after = env.statuses(everything)
    assert {i: s for i, s in after.items() if i not in given_ids} == {
        i: s for i, s in before.items() if i not in given_ids}
