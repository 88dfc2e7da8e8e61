"""Malformed rows written straight into the table while a real supervisor runs.

Rows an application or an operator wrote by hand (bad JSON, absurd attempt counters, garbage
context) must each end ``failed`` with a ``last_error`` naming the reason, without a worker
crashing or restarting, and without holding back the good tasks that run beside them (each of
those succeeds exactly once). Rows no worker serves (an unknown queue or status, or a key no
worker has a handler for: it waits for a supervisor that has one) are left exactly as they were.
"""
from __future__ import annotations

import dataclasses
import inspect
import itertools
import json

import hypothesis.strategies as st
import pytest
from hypothesis import example, given, settings

import gta_core

from ..handlers.tasks import record
from ..support.helpers import Env, SupervisorProcess, wait_for

pytestmark = pytest.mark.chaos

INT32 = (-(2**31), 2**31 - 1)  # the attempts columns are INTEGER on PostgreSQL and MariaDB
_numbers = itertools.count(1_000_000)  # the good tasks' `n`, unique across examples


@dataclasses.dataclass(frozen=True)
class Row:
    """A task row as written by hand, and what the engine must make of it."""

    key: str = "record"
    args: str = '{"n": 1}'
    context: str | None = None
    attempts: int = 0
    max_attempts: int = 3
    queue: str = "default"
    status: str = "pending"

    def expected_error(self) -> str | None:
        """The fragment ``last_error`` must contain, or None when the task must succeed (a row
        that is `served`). The order is the worker's: attempt counters, arguments, context.
        """
        if not 0 <= self.attempts < self.max_attempts:
            return "attempt counter"
        try:
            args = json.loads(self.args)
        except (ValueError, RecursionError):
            return "arguments are not valid JSON"
        if not isinstance(args, dict):
            return "arguments are not a JSON object"
        try:
            inspect.signature(record.fn).bind(None, **args)
        except TypeError:
            return "do not match"
        if self.context:
            try:
                json.loads(self.context)
            except (ValueError, RecursionError):
                return "context is not valid JSON"
        return None

    def served(self, known_keys: set[str]) -> bool:
        """Whether the supervisor (queue ``default``, handlers for ``known_keys``) may ever lease this row."""
        return self.queue == "default" and self.status == "pending" and self.key in known_keys


def insert_raw(env: Env, row: Row) -> int:
    """Insert ``row`` with plain SQL, due now; its id."""
    store = env.store
    d = store.sql.dialect
    sql = (f"INSERT INTO {env.table} ({d.q('key')}, queue, status, priority, args, context, run_at, attempts, "
           f"max_attempts, created_at, updated_at) VALUES (?, ?, ?, 0, ?, ?, {d.now}, ?, ?, {d.now}, {d.now})")
    params = (row.key, row.queue, row.status, row.args, row.context, row.attempts, row.max_attempts)
    cursor = store.db.execute_sql(d.fix(sql), params)
    if store.dialect == "postgres":
        return int(store.db.execute_sql(f"SELECT currval(pg_get_serial_sequence('{env.table}', 'id'))")
                   .fetchone()[0])
    return int(cursor.lastrowid)


def column_text(alphabet_max: int = 40) -> st.SearchStrategy[str]:
    """Text every database stores unchanged (PostgreSQL refuses NUL, drivers lone surrogates)."""
    return st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=alphabet_max)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3), max_leaves=5)
args_texts = st.one_of(
    st.builds(lambda value: json.dumps({"n": value}), json_values),  # binds: runs
    st.sampled_from(["{}", '{"m": 1}', '{"n": 1, "ctx": 2}', "[1, 2]", '"text"', "null", "7", "{bad",
                     "", "{'n': 1}", '{"n": NaN}', "[" * 100_000, '{"n": ' * 5_000]),
    column_text(),
)
context_texts = st.one_of(st.none(), column_text(20),
                          st.sampled_from(["", "null", '{"request_id": "r-1"}', "[1]", "{bad", "[" * 100_000]))
counters = st.one_of(st.integers(-3, 6), st.sampled_from([INT32[0], INT32[1], INT32[1] - 1]),
                     st.integers(*INT32))
keys = st.one_of(st.sampled_from(["record", "record", "no_such_task", "", "Record", "record "]), column_text(30))
rows = st.builds(Row, key=keys, args=args_texts, context=context_texts, attempts=counters, max_attempts=counters,
                 queue=st.sampled_from(["default", "default", "default", "nobody_serves_this", ""]),
                 status=st.sampled_from(["pending"] * 6 + ["paused", "PENDING"]))

NAMED_CASES = [
    Row(args="{bad"),
    Row(args="[1, 2]"),
    Row(args='"just a string"'),
    Row(args='{"m": 1}'),
    Row(args="[" * 100_000),  # nesting deeper than any JSON parser recurses
    Row(key="no_such_task", args="{}"),
    Row(key="record "),  # equal to 'record' for MariaDB's padding collation, not for the worker's registry
    Row(attempts=-5),
    Row(attempts=3, max_attempts=3),
    Row(attempts=10, max_attempts=3),
    Row(attempts=INT32[1], max_attempts=3),
    Row(attempts=INT32[1], max_attempts=INT32[1]),
    Row(attempts=INT32[1] - 1, max_attempts=INT32[1]),  # in range: its last attempt runs
    Row(attempts=0, max_attempts=0),
    Row(attempts=0, max_attempts=-1),
    Row(attempts=INT32[0], max_attempts=INT32[0]),
    Row(context="null"),
    Row(context=""),
    Row(context="{bad"),
    Row(context="[1]"),  # valid JSON that is no object: no context is restored, the task runs
    Row(queue="nobody_serves_this"),
    Row(queue=""),
    Row(status="paused"),
]


def test_malformed_rows_fail_with_a_reason_and_harm_nothing(env: Env) -> None:
    """One supervisor (2 workers) meets batches of hand-written rows beside good tasks; the
    worker processes are the same ones at the end, and their log shows no crash or lease error."""
    supervisor = env.supervisor(2)
    workers = sorted(supervisor.worker_pids())
    known = set(env.runtime.plugins.registry.tasks)

    @settings(max_examples=12, deadline=None, database=None)
    @example(batch=NAMED_CASES)
    @given(batch=st.lists(rows, min_size=1, max_size=5))
    def check(batch: list[Row]) -> None:
        check_batch(env, supervisor, known, batch)

    check()
    assert sorted(supervisor.worker_pids()) == workers, supervisor.log()
    log = supervisor.log()
    for symptom in ("died", "restarting worker", "lease failed", "Traceback"):
        assert symptom not in log, f"{symptom!r} in the supervisor log:\n{log}"


def check_batch(env: Env, supervisor: SupervisorProcess, known: set[str], batch: list[Row]) -> None:
    bad = {insert_raw(env, row): row for row in batch}
    good = {gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": n}): n for n in (next(_numbers), next(_numbers))}
    settled = [task_id for task_id, row in bad.items() if row.served(known)]
    env.wait_final([*settled, *good])
    runs = env.runs_by_task()
    for task_id, row in bad.items():
        found = env.store.get(task_id)
        assert found is not None
        if not row.served(known):  # untouched: no worker serves its queue, status or key
            assert (found["status"], found["attempts"], found["last_error"]) == (row.status, row.attempts, None)
            continue
        expected = row.expected_error()
        if expected is None:
            assert found["status"] == "succeeded", (row, found["last_error"])
            assert runs.get(task_id) == 1
            attempt = next(entry["attempt"] for entry in env.ledger_entries() if entry["id"] == task_id)
            assert attempt == row.attempts + 1
        else:
            assert found["status"] == "failed", (row, found)
            assert expected in (found["last_error"] or ""), (row, found["last_error"])
            assert task_id not in runs, f"malformed row {row} was run"
            assert found["lease_owner"] is not None and found["finished_at"] is not None
    for task_id in good:
        assert runs.get(task_id) == 1
    assert set(env.statuses(list(good)).values()) == {"succeeded"}
    assert len(supervisor.worker_pids()) == 2


@pytest.fixture
def sqlite_env(env: Env) -> Env:
    if env.store.dialect != "sqlite":
        pytest.skip("SQLite only, by design: PostgreSQL and MariaDB column types refuse these values at INSERT")
    return env


def test_sqlite_values_of_the_wrong_type_do_not_poison_leasing(sqlite_env: Env) -> None:
    """SQLite keeps whatever it is given: a timestamp that is not one, arguments that are a number
    or bytes. Before the fix, the unreadable run_at killed every worker that leased the row."""
    env = sqlite_env
    store = env.store
    d = store.sql.dialect
    bad = []
    for run_at, args in (("0000-garbage", '{"n": 1}'), ("2000-01-01 00:00:00", 42), ("1999", b'{"n": 2}')):
        cursor = store.db.execute_sql(
            f"INSERT INTO {env.table} ({d.q('key')}, queue, status, priority, args, context, run_at, attempts, "
            f"max_attempts, created_at, updated_at) VALUES ('record', 'default', 'pending', 0, ?, NULL, ?, 0, 3, "
            f"{d.now}, {d.now})", (args, run_at))
        bad.append(int(cursor.lastrowid))
    supervisor = env.supervisor(1)
    workers = supervisor.worker_pids()
    good = [gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": n}) for n in (10, 11)]
    statuses = env.wait_final([*bad, *good])
    assert [statuses[task_id] for task_id in good] == ["succeeded", "succeeded"]
    assert statuses[bad[0]] == "succeeded"  # an unreadable run_at does not stop a due task
    assert statuses[bad[1]] == "failed"
    last_error = env.store.get(bad[1])["last_error"]
    assert "arguments are not a JSON object" in last_error  # TEXT affinity stored 42 as '42'
    assert statuses[bad[2]] == "succeeded"  # JSON bytes decode as JSON text
    assert env.runs_by_task() == {bad[0]: 1, bad[2]: 1, good[0]: 1, good[1]: 1}
    assert wait_for(lambda: supervisor.worker_pids() == workers, 5, "the same worker")
    assert "died" not in supervisor.log() and "lease failed" not in supervisor.log()
