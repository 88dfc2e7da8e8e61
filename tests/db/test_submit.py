"""Transactional submit: a task exists if and only if the caller's transaction commits, and
bad input raises a clear error while writing nothing. That a supervisor then runs exactly the
committed tasks is tests/process/test_submit.py."""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import math
from decimal import Decimal
from typing import Any

import hypothesis.strategies as st
import playhouse.db_url
import pytest
from hypothesis import HealthCheck, given, settings

import gta_core
from gta_core.store.sql.statements import SCHEMA_VERSION
from gta_core.submit import TaskRequest

from ..support.helpers import Env
from ..support.rows import row_count


class Boom(Exception):
    """Raised to roll a transaction back."""


def all_args(env: Env) -> dict[int, dict[str, Any]]:
    """Every row's id and decoded args, read with direct SQL."""
    cursor = env.runtime.db.execute_sql(f"SELECT id, args FROM {env.table} ORDER BY id")
    return {task_id: json.loads(args) for task_id, args in cursor.fetchall()}


def assert_pending(env: Env, task_id: int, key: str, args: dict[str, Any], *, queue: str = "default",
                   max_attempts: int = 3) -> None:
    row = env.store.get(task_id)
    assert row is not None, f"task {task_id} does not exist"
    assert (row["key"], row["status"], row["queue"], row["max_attempts"]) == (key, "pending", queue, max_attempts)
    assert json.loads(row["args"]) == args
    assert row["attempts"] == 0 and row["lease_owner"] is None and row["parent_id"] is None


# -- commit and rollback ----------------------------------------------------------------------
def test_commit_writes_a_pending_row(env: Env) -> None:
    with env.runtime.db.atomic() as tx:
        task_id = gta_core.submit(tx, "record", {"n": 1})
        assert isinstance(task_id, int)
    assert_pending(env, task_id, "record", {"n": 1})
    row = env.store.get(task_id)
    assert row is not None
    assert row["priority"] == 0 and row["dedupe_key"] is None and row["order_key"] is None
    assert row["run_at"] <= dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5)
    assert row["created_at"] is not None and row["finished_at"] is None


def test_options_are_stored(env: Env) -> None:
    run_at = dt.datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with env.runtime.db.atomic() as tx:
        at_id = gta_core.submit(tx, "greet", {"name": "Ada"}, run_at=run_at, priority=7, queue="mail",
                                max_attempts=9, order_key="customer-1")
        later_id = gta_core.submit(tx, "record", delay=dt.timedelta(hours=1))
    assert_pending(env, at_id, "greet", {"name": "Ada"}, queue="mail", max_attempts=9)
    row = env.store.get(at_id)
    assert row is not None
    assert (row["priority"], row["order_key"]) == (7, "customer-1")
    assert row["run_at"] == run_at  # stored in UTC, microseconds kept
    later = env.store.get(later_id)
    assert later is not None and json.loads(later["args"]) == {}
    assert later["run_at"] - later["created_at"] >= dt.timedelta(minutes=59)


def test_rollback_writes_nothing(env: Env) -> None:
    with pytest.raises(Boom):
        with env.runtime.db.atomic() as tx:
            task_id = gta_core.submit(tx, "record", {"n": 1})
            assert env.store.get(task_id) is not None  # visible inside its own transaction
            raise Boom
    assert env.store.get(task_id) is None
    assert row_count(env) == 0


def test_an_id_is_never_handed_out_twice(env: Env) -> None:
    """Not even the id of a submit that rolled back, whose caller may still ask about it
    (SQLite's AUTOINCREMENT counter rolls back with the transaction: `gta_core.db.sqlite_ids`)."""
    db = env.runtime.db
    given = []
    for _ in range(2):
        with pytest.raises(Boom), db.atomic() as tx:
            given.append(gta_core.submit(tx, "record", {"n": 1}))
            raise Boom
    with db.atomic() as outer:
        kept = gta_core.submit(outer, "record", {"n": 2})
        with pytest.raises(Boom), db.atomic() as savepoint:
            given.append(gta_core.submit(savepoint, "record", {"n": 3}))
            raise Boom
        after = gta_core.submit(outer, "record", {"n": 4})
    assert len({*given, kept, after}) == 5 and min(kept, after) > given[1] > given[0]
    assert [gta_core.status(task_id) for task_id in given] == [None, None, None]
    assert gta_core.status(after).id == after  # type: ignore[union-attr]


@pytest.mark.parametrize("backend", ["sqlite"])  # the counter and its row are SQLite's
def test_migrate_gives_an_existing_sqlite_table_its_id_counter(env: Env) -> None:
    """AUTOINCREMENT adds the counter's row at a table's first insert: one made by an earlier GTA
    that never had a task gets it from `gta migrate`, so its first rolled-back id is not reused."""
    env.runtime.db.execute_sql("DELETE FROM sqlite_sequence WHERE name = ?", (env.table,))
    env.store.migrate()
    with pytest.raises(Boom), env.runtime.db.atomic() as tx:
        first = gta_core.submit(tx, "record", {"n": 1})
        raise Boom
    assert gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 2}) > first


def test_rolled_back_nested_atomic_loses_only_its_own_task(env: Env) -> None:
    db = env.runtime.db
    with db.atomic() as outer:
        kept = gta_core.submit(outer, "record", {"n": 1})
        with pytest.raises(Boom):
            with db.atomic() as inner:  # a savepoint
                gta_core.submit(inner, "record", {"n": 2})
                raise Boom
        after = gta_core.submit(outer, "record", {"n": 3})
    assert all_args(env) == {kept: {"n": 1}, after: {"n": 3}}
    assert_pending(env, kept, "record", {"n": 1})


def test_rolled_back_outer_loses_committed_looking_nested_task(env: Env) -> None:
    db = env.runtime.db
    with pytest.raises(Boom):
        with db.atomic():
            with db.atomic() as inner:
                gta_core.submit(inner, "record", {"n": 1})
            raise Boom  # the savepoint was released, but its outer transaction rolls back
    assert row_count(env) == 0


def test_several_tasks_in_one_transaction(env: Env) -> None:
    with env.runtime.db.atomic() as tx:
        ids = [gta_core.submit(tx, "record", {"n": n}) for n in range(10)]
    assert len(set(ids)) == 10
    assert all_args(env) == {task_id: {"n": n} for n, task_id in enumerate(ids)}
    assert set(env.statuses(ids).values()) == {"pending"}


@pytest.mark.parametrize("how", ["atomic", "transaction", "database", "database-outside-transaction",
                                 "own-transaction"])
def test_accepted_db_tx_forms(env: Env, how: str) -> None:
    db = env.runtime.db
    if how == "atomic":
        with db.atomic() as tx:
            task_id = gta_core.submit(tx, "record", {"n": 1})
    elif how == "transaction":
        with db.transaction() as tx:
            task_id = gta_core.submit(tx, "record", {"n": 1})
    elif how == "database":  # the Database itself: its current transaction is used
        with pytest.raises(Boom):
            with db.atomic():
                gta_core.submit(db, "record", {"n": 0})
                raise Boom
        assert row_count(env) == 0
        with db.atomic():
            task_id = gta_core.submit(db, "record", {"n": 1})
    elif how == "database-outside-transaction":  # a transaction of its own, committed at once
        task_id = gta_core.submit(db, "record", {"n": 1})
        assert not db.in_transaction()
    else:  # OWN_TRANSACTION: the configured database, in a transaction of its own
        task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1})
        assert not db.in_transaction()
    assert_pending(env, task_id, "record", {"n": 1})
    assert row_count(env) == 1


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_applications_own_database_object(env: Env, outcome: str) -> None:
    """The usual case: the application's own peewee Database, not GTA's, on the same database."""
    app_db = playhouse.db_url.connect(env.db_url)
    try:
        with pytest.raises(Boom) if outcome == "rollback" else contextlib.nullcontext():
            with app_db.atomic() as tx:
                task_id = gta_core.submit(tx, "record", {"n": 1})
                assert row_count(env) == 0  # GTA's own connection cannot see it before the commit
                if outcome == "rollback":
                    raise Boom
        if outcome == "commit":
            assert_pending(env, task_id, "record", {"n": 1})
        else:
            assert row_count(env) == 0
    finally:
        app_db.close()


def test_gta_transaction_context_manager(env: Env) -> None:
    with gta_core.transaction() as tx:
        kept = gta_core.submit(tx, "record", {"n": 1})
    with pytest.raises(Boom):
        with gta_core.transaction(env.runtime.db) as tx:
            gta_core.submit(tx, "record", {"n": 2})
            raise Boom
    assert all_args(env) == {kept: {"n": 1}}


def test_submit_many_returns_ids_in_order(env: Env) -> None:
    items: list[Any] = [("record", {"n": n}) for n in range(7)]
    items.insert(3, TaskRequest("greet", {"name": "Grace"}, queue="mail", max_attempts=4))
    with env.runtime.db.atomic() as tx:
        ids = gta_core.submit_many(tx, items)
    assert len(ids) == 8 and len(set(ids)) == 8
    for task_id, item in zip(ids, items, strict=True):
        if isinstance(item, TaskRequest):
            assert_pending(env, task_id, "greet", {"name": "Grace"}, queue="mail", max_attempts=4)
        else:
            assert_pending(env, task_id, item[0], item[1])
    assert row_count(env) == 8
    assert gta_core.submit_many(gta_core.OWN_TRANSACTION, []) == []


#: every option with two values; a batch takes each either from one row's choice for all rows
#: (a column the rows share) or alternating (a column that varies), as PostgreSQL's bulk
#: insert passes the two differently
OPTION_VALUES: dict[str, tuple[Any, Any]] = {
    "args": ({"n": 1}, {"n": 2}),
    "priority": (None, -7),
    "queue": ("default", "mail"),
    "context": (None, {"request_id": "r-1"}),
    "max_attempts": (None, 9),
    "order_key": (None, "customer:1"),
    "timing": (("delay", 0), ("run_at", dt.datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone.utc))),
}


def stored_fields(env: Env, task_id: int) -> dict[str, Any]:
    row = env.store.get(task_id)
    assert row is not None
    return {name: value for name, value in row.items()
            if name not in ("id", "created_at", "updated_at") and not (name == "run_at" and value.year < 2031)}


@pytest.mark.parametrize("varying", [(), tuple(OPTION_VALUES), ("args",), ("timing", "queue"),
                                     ("priority", "context", "order_key", "max_attempts")])
def test_submit_many_stores_each_row_as_submit_does(env: Env, varying: tuple[str, ...]) -> None:
    requests = []
    for n in range(6):
        chosen = {name: values[n % 2 if name in varying else 1] for name, values in OPTION_VALUES.items()}
        timing_name, timing_value = chosen.pop("timing")
        requests.append(TaskRequest("record", chosen.pop("args"), **chosen, **{timing_name: timing_value}))
    requests.append(TaskRequest("record", {"n": 3}, parent_id=12345))
    with env.runtime.db.atomic() as tx:
        many = gta_core.submit_many(tx, requests)
        one_by_one = [gta_core.submit_many(tx, [request])[0] for request in requests]
    assert [stored_fields(env, task_id) for task_id in many] == [stored_fields(env, i) for i in one_by_one]
    assert stored_fields(env, many[1])["run_at"] == OPTION_VALUES["timing"][1][1]


def test_submit_many_beyond_one_statement(env: Env) -> None:
    count = env.store._d.insert_chunk * 2 + 34
    ids = gta_core.submit_many(gta_core.OWN_TRANSACTION, [("record", {"n": n}) for n in range(count)])
    assert len(set(ids)) == count
    assert all_args(env) == {task_id: {"n": n} for n, task_id in enumerate(ids)}


def test_submit_many_is_all_or_nothing(env: Env) -> None:
    items = [("record", {"n": 1}), ("record", {"n": object()}), ("record", {"n": 3})]
    with pytest.raises(gta_core.InvalidArguments):
        gta_core.submit_many(gta_core.OWN_TRANSACTION, items)
    with pytest.raises(gta_core.UnknownTask):
        gta_core.submit_many(gta_core.OWN_TRANSACTION, [("record", {"n": 1}), ("no_such_task", {})])
    assert row_count(env) == 0


# -- bad input: a clear error, nothing written ------------------------------------------------
class Unserializable:
    pass


def _circular() -> dict[str, Any]:
    items: list[Any] = []
    items.append(items)
    return {"n": items}


BAD_SUBMITS: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("object", {"args": {"n": object()}}, gta_core.InvalidArguments, "JSON"),
    ("custom-class", {"args": {"n": Unserializable()}}, gta_core.InvalidArguments, "JSON"),
    ("set", {"args": {"n": {1, 2}}}, gta_core.InvalidArguments, "JSON"),
    ("bytes", {"args": {"n": b"x"}}, gta_core.InvalidArguments, "JSON"),
    ("decimal", {"args": {"n": Decimal("1.5")}}, gta_core.InvalidArguments, "JSON"),
    ("datetime", {"args": {"n": dt.datetime(2030, 1, 1)}}, gta_core.InvalidArguments, "JSON"),
    ("nan", {"args": {"n": math.nan}}, gta_core.InvalidArguments, "JSON"),
    ("infinity", {"args": {"n": [1.0, -math.inf]}}, gta_core.InvalidArguments, "JSON"),
    ("circular", {"args": _circular()}, gta_core.InvalidArguments, "JSON"),
    ("tuple", {"args": {"n": (1, 2)}}, gta_core.InvalidArguments, "tuple"),
    ("int-key", {"args": {"n": {1: "one"}}}, gta_core.InvalidArguments, "key 1"),
    ("args-list", {"args": [1, 2]}, gta_core.InvalidArguments, "dict"),
    ("args-str", {"args": '{"n": 1}'}, gta_core.InvalidArguments, "dict"),
    ("unknown-key", {"key": "no_such_task"}, gta_core.UnknownTask, "'no_such_task'"),
    ("key-not-str", {"key": 42}, gta_core.InvalidArguments, "key"),
    ("missing-required", {"key": "greet", "args": {}}, gta_core.InvalidArguments, "missing"),
    ("unexpected-kwarg", {"args": {"n": 1, "m": 2}}, gta_core.InvalidArguments, "'m'"),
    ("ctx-as-arg", {"args": {"ctx": 1}}, gta_core.InvalidArguments, "multiple values"),
    ("naive-run-at", {"run_at": dt.datetime(2030, 1, 1)}, gta_core.InvalidArguments, "run_at"),
    ("run-at-not-datetime", {"run_at": "2030-01-01T00:00:00Z"}, gta_core.InvalidArguments, "run_at"),
    ("negative-delay", {"delay": -1}, gta_core.InvalidArguments, "delay"),
    ("negative-timedelta", {"delay": dt.timedelta(seconds=-5)}, gta_core.InvalidArguments, "delay"),
    ("delay-and-run-at", {"delay": 5, "run_at": dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)},
     gta_core.InvalidArguments, "delay"),
    ("zero-attempts", {"max_attempts": 0}, gta_core.InvalidArguments, "max_attempts"),
    ("empty-queue", {"queue": ""}, gta_core.InvalidArguments, "queue"),
    ("long-queue", {"queue": "q" * 192}, gta_core.InvalidArguments, "queue"),
    ("priority-str", {"priority": "high"}, gta_core.InvalidArguments, "priority"),
    ("context-unserializable", {"context": {"trace": object()}}, gta_core.InvalidArguments, "context"),
    ("db-tx-str", {"db_tx": "sqlite:///x.db"}, gta_core.SubmitError, "db_tx"),
    ("db-tx-connection-like", {"db_tx": object()}, gta_core.SubmitError, "db_tx"),
    ("db-tx-none", {"db_tx": None}, gta_core.SubmitError, "gta_core.OWN_TRANSACTION"),
]


@pytest.mark.parametrize("case", BAD_SUBMITS, ids=[case[0] for case in BAD_SUBMITS])
def test_bad_input_raises_and_writes_nothing(env: Env, case: tuple[str, dict[str, Any], type[Exception], str]
                                             ) -> None:
    _, overrides, error, fragment = case
    call: dict[str, Any] = {"db_tx": gta_core.OWN_TRANSACTION, "key": "record", "args": {"n": 1}, **overrides}
    db_tx, key, args = call.pop("db_tx"), call.pop("key"), call.pop("args")
    before = row_count(env)
    with pytest.raises(error) as info:
        gta_core.submit(db_tx, key, args, **call)
    assert isinstance(info.value, gta_core.GTAError)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(error):  # inside a transaction too, which then commits nothing
        with env.runtime.db.atomic():
            gta_core.submit(env.runtime.db if db_tx is gta_core.OWN_TRANSACTION else db_tx, key, args, **call)
    assert row_count(env) == before


def test_failed_submit_leaves_the_transaction_usable(env: Env) -> None:
    with env.runtime.db.atomic() as tx:
        first = gta_core.submit(tx, "record", {"n": 1})
        with pytest.raises(gta_core.InvalidArguments):
            gta_core.submit(tx, "record", {"n": object()})
        with pytest.raises(gta_core.UnknownTask):
            gta_core.submit(tx, "no_such_task")
        with pytest.raises(gta_core.InvalidArguments):
            gta_core.submit(tx, "greet", {"nom": "x"})
        second = gta_core.submit(tx, "record", {"n": 2})
    assert all_args(env) == {first: {"n": 1}, second: {"n": 2}}


# -- property: a submit either round-trips its args exactly or raises and writes nothing --------
json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
                | st.sampled_from(["", "\x00", "\ud800", "caf\u00e9 \U0001f600", "'; DROP TABLE x; --", "\\u0000"]))
not_json = (st.sampled_from([math.nan, math.inf, -math.inf]) | st.binary(max_size=4)
            | st.sets(st.integers(), max_size=3) | st.tuples(st.integers())
            | st.builds(object) | st.dates() | st.decimals(allow_nan=False, places=2)
            | st.dictionaries(st.integers(), st.integers(), min_size=1, max_size=2))
values = st.recursive(
    json_scalars | not_json,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
submit_args = (st.builds(lambda value: {"n": value}, values)  # binds to record(ctx, n=0)
               | st.dictionaries(st.text(max_size=5), values, max_size=3)  # mostly does not bind
               | values)  # not even a dict, mostly


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=submit_args)
def test_property_args_round_trip_or_nothing_is_written(env: Env, args: Any) -> None:
    before = row_count(env)
    try:
        task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "record", args)
    except gta_core.GTAError:
        assert row_count(env) == before
        return
    row = env.store.get(task_id)
    assert row is not None
    assert json.loads(row["args"]) == ({} if args is None else args)  # None means no arguments
    assert row_count(env) == before + 1


# -- a None handle, a missing table --------------------------------------------------------------
def test_none_handle_is_refused_before_anything_is_written(env: Env) -> None:
    """An unset variable, or ``with atomic() as a`` where ``a`` is None, must not quietly move
    the task out of the caller's transaction: the caller learns at once what to pass."""
    db = env.runtime.db
    with pytest.raises(Boom):
        with db.atomic() as tx:
            kept = gta_core.submit(tx, "record", {"n": 1})
            for call in (lambda: gta_core.submit(None, "record", {"n": 2}),
                         lambda: gta_core.submit_many(None, [("record", {"n": 3})]),
                         lambda: gta_core.cancel(kept, db=None),
                         lambda: gta_core.status(kept, db=None)):
                with pytest.raises(gta_core.SubmitError, match="is None: pass your transaction") as info:
                    call()
                assert "gta_core.OWN_TRANSACTION" in str(info.value) and "\n" not in str(info.value)
            with pytest.raises(gta_core.SubmitError, match="is None"):
                with gta_core.transaction(None):
                    pass
            assert gta_core.submit(tx, "record", {"n": 4}) > kept  # the caller's transaction goes on
            assert row_count(env) == 2  # its own two rows, uncommitted; nothing else was written
            raise Boom
    assert row_count(env) == 0  # rolled back: no row of it, none of the refused calls'
    with pytest.raises(gta_core.SubmitError, match="OWN_TRANSACTION"):
        gta_core.submit(None, "record", {"n": 5})
    assert row_count(env) == 0
    own = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 6})
    assert repr(gta_core.OWN_TRANSACTION) == "gta_core.OWN_TRANSACTION"
    assert_pending(env, own, "record", {"n": 6})


def test_submit_to_a_table_not_migrated_says_run_gta_migrate(env: Env) -> None:
    settings = dataclasses.replace(env.runtime.settings, table="gta_never_migrated")
    runtime = gta_core.configure(settings)
    with pytest.raises(gta_core.SchemaError) as info:
        with runtime.db.atomic() as tx:
            gta_core.submit(tx, "record", {"n": 1})
    assert str(info.value) == ("task table 'gta_never_migrated' is missing, this GTA needs version "
                               f"{SCHEMA_VERSION}: run `gta migrate`")
    for call in (lambda: gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1}),
                 lambda: gta_core.submit_many(gta_core.OWN_TRANSACTION, [("record", {"n": n}) for n in range(3)]),
                 lambda: gta_core.status(1)):
        with pytest.raises(gta_core.SchemaError, match="is missing.*run `gta migrate`"):
            call()
    with runtime.db.atomic() as tx:  # the connection is usable afterwards
        assert tx.db.execute_sql("SELECT 1").fetchone()[0] == 1


def test_unknown_task_says_where_handlers_must_be_loaded(env: Env) -> None:
    """The usual cause: the handler module is loaded by the supervisor (--plugin) only."""
    with pytest.raises(gta_core.UnknownTask) as info:
        gta_core.submit(gta_core.OWN_TRANSACTION, "no_such_task")
    message = str(info.value)
    assert "'no_such_task'" in message and "\n" not in message
    assert "gta_handlers entry point" in message and "GTA_PLUGINS=" in message and "supervisor" in message
    assert row_count(env) == 0
