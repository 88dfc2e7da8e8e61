"""Global limits (``@task(concurrency=, concurrency_key=, rate_limit=)``, `gta_core.limit_queue`,
``gta limit``, ``gta limits``) on every configured database, with real supervisors: a cap holds
across supervisors (checked from the ledger of start and end times), per key, per queue; a rate
holds per fixed window; a dead worker's slot comes back with its lease; unlimited queues drain
beside a limited one at its cap; bad values are refused in one line."""
from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import pytest

import gta_core
from gta_core.errors import InvalidLimit, SchemaError
from gta_core.limit_rules import Rate, parse_rate

from ..support.cli import environ, fails, gta, ok
from ..support.helpers import Env, wait_for

PLUGINS = "tests.handlers.tasks,tests.handlers.limit_tasks"


@pytest.fixture
def lenv(env: Env, monkeypatch: pytest.MonkeyPatch) -> Env:
    """`env` with the limited handlers of `tests.handlers.limit_tasks` registered here and in supervisors."""
    return env.with_plugins(monkeypatch, PLUGINS)


def runs(env: Env, key: str | None = None) -> list[dict[str, Any]]:
    """(start, end) pairs of the ledger, one dict per attempt that ended, by start time."""
    starts: dict[tuple[int, int], dict[str, Any]] = {}
    pairs = []
    for entry in env.ledger_entries():
        if entry["phase"] == "start":
            starts[(entry["id"], entry["attempt"])] = entry
        elif entry["phase"] == "end" and (entry["id"], entry["attempt"]) in starts:
            start = starts[(entry["id"], entry["attempt"])]
            pairs.append({**start, "start": start["t"], "end": entry["t"]})
    return sorted(pairs, key=lambda run: run["start"])


def most_at_once(intervals: Iterable[dict[str, Any]]) -> int:
    """The largest number of (start, end) intervals open at one moment (an end before a start at a tie)."""
    runs = list(intervals)
    events = sorted([(run["start"], 1) for run in runs] + [(run["end"], -1) for run in runs])
    open_now = peak = 0
    for _, step in events:
        open_now += step
        peak = max(peak, open_now)
    return peak


def submit(key: str, items: list[dict[str, Any]], **options: Any) -> list[int]:
    return gta_core.submit_many(gta_core.OWN_TRANSACTION, [gta_core.TaskRequest(key, args, **options)
                                                           for args in items])


FLAGS = ("--threads", "3", "--queues", "default,lq,free")


def test_task_concurrency_holds_across_two_supervisors(lenv: Env) -> None:
    ids = submit("capped", [{"seconds": 0.3, "n": n} for n in range(24)])
    one_thread = ("--threads", "1", "--queues", "default")  # 4 slots for a cap of 3: both supervisors run some
    first, second = lenv.supervisor(2, *one_thread), lenv.supervisor(2, *one_thread)
    assert set(lenv.wait_final(ids).values()) == {"succeeded"}
    ran = runs(lenv)
    assert len(ran) == 24
    assert most_at_once(ran) == 3, ran  # never more, and the cap was reached
    assert {run["pid"] for run in ran} & set(first.worker_pids()) and \
        {run["pid"] for run in ran} & set(second.worker_pids())  # both supervisors took part
    assert [row[:3] for row in lenv.store.limit_rows()][:1] == [("task", "capped", 3)]


def test_per_key_concurrency_runs_customers_in_parallel_never_one_twice(lenv: Env) -> None:
    items = [{"customer": customer, "seconds": 0.25, "n": n} for n in range(6) for customer in ("acme", "globex")]
    ids = submit("per_customer", items)
    lenv.supervisor(2, *FLAGS)
    lenv.supervisor(2, *FLAGS)
    assert set(lenv.wait_final(ids).values()) == {"succeeded"}
    ran = runs(lenv)
    assert len(ran) == 12
    for customer in ("acme", "globex"):
        assert most_at_once(run for run in ran if run["customer"] == customer) == 1
    assert most_at_once(ran) == 2  # the two customers did run side by side
    assert {lenv.store.get(task_id)["status"] for task_id in ids} == {"succeeded"}  # type: ignore[index]


def test_submit_concurrency_key_overrides_the_argument(lenv: Env) -> None:
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "per_customer", {"customer": "acme", "seconds": 0},
                              concurrency_key="tenant-7")
    default = gta_core.submit(gta_core.OWN_TRANSACTION, "per_customer", {"customer": "acme", "seconds": 0})
    plain = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1})
    keys = dict(lenv.runtime.db.execute_sql(f"SELECT id, concurrency_key FROM {lenv.table}").fetchall())
    assert keys == {task_id: "tenant-7", default: "acme", plain: None}


def test_queue_concurrency_set_by_gta_limit_while_unlimited_queues_drain(lenv: Env) -> None:
    out = ok("limit", "lq", "--concurrency", "2", env_vars=environ())
    assert "limited queue 'lq': at most 2 running" in out
    listed = json.loads(ok("limits", "--json", env_vars=environ()))
    assert {"kind": "queue", "name": "lq", "concurrency": 2, "rate_limit": None, "per_key": False} \
        .items() <= next(row for row in listed if row["kind"] == "queue").items()
    limited = submit("sleepy", [{"seconds": 2.0, "n": n} for n in range(8)], queue="lq")
    lenv.supervisor(2, *FLAGS)
    lenv.supervisor(2, *FLAGS)
    wait_for(lambda: len([e for e in lenv.ledger_entries() if e["queue"] == "lq"]) >= 2, what="lq at its cap")
    free = submit("sleepy", [{"seconds": 0.05, "n": n} for n in range(40)], queue="free")
    lenv.wait_final(free)
    drained = time.time()
    statuses = lenv.statuses(limited)
    assert list(statuses.values()).count("pending") >= 2, statuses  # lq was still at its cap meanwhile
    assert set(lenv.wait_final(limited).values()) == {"succeeded"}
    lq = [run for run in runs(lenv) if run["queue"] == "lq"]
    assert most_at_once(lq) == 2, lq
    assert max(run["end"] for run in lq) > drained
    free_runs = [run for run in runs(lenv) if run["queue"] == "free"]
    assert len(free_runs) == 40 and most_at_once(free_runs) > 2  # not held to lq's cap
    assert "removed the limit of queue 'lq'" in ok("limit", "lq", "--clear", env_vars=environ())
    assert [row for row in json.loads(ok("limits", "--json", env_vars=environ())) if row["kind"] == "queue"] == []


def test_rate_limit_holds_per_fixed_window(lenv: Env) -> None:
    ids = submit("rated", [{"n": n} for n in range(15)])
    lenv.supervisor(2, *FLAGS)
    lenv.supervisor(2, *FLAGS)
    assert set(lenv.wait_final(ids).values()) == {"succeeded"}
    starts = sorted(entry["t"] for entry in lenv.ledger_entries() if entry["phase"] == "start")
    assert len(starts) == 15
    # fixed windows of 1 s: at most 5 starts in each, so at most 2 x 5 in any second that straddles
    # a boundary (the documented bound), and 15 starts span at least three windows: over a second
    # between the leases of the first and the last (less a little for when each wrote its line)
    assert max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts) <= 10
    assert starts[-1] - starts[0] >= 0.9, starts


def test_rate_window_counts_every_lease_in_it(env: Env) -> None:
    """No more than N leases in one window, exactly (a window of an hour, so the test never
    straddles one unless it runs across the hour), and a cleared limit leases the rest."""
    gta_core.limit_queue("default", rate_limit="3/h")
    submit("record", [{"n": n} for n in range(10)])
    store = env.store
    assert len(store.lease("w1", ["default"], 10, 30)) == 3
    assert store.lease("w2", ["default"], 10, 30) == []
    state = gta_core.limits()[0]
    assert (state.kind, state.name, state.rate_limit, state.window_count) == ("queue", "default", "3/h", 3)
    assert gta_core.unlimit_queue("default") is True and gta_core.unlimit_queue("default") is False
    assert len(store.lease("w2", ["default"], 10, 30)) == 7


def test_a_dead_workers_slot_returns_when_its_lease_expires(lenv: Env) -> None:
    lease = {"GTA_LEASE_TIMEOUT": "3", "GTA_RESCUE_INTERVAL": "0.5"}
    first = submit("solo", [{"seconds": 60}])
    doomed = lenv.supervisor(1, *FLAGS, extra_env=lease)
    wait_for(lambda: any(e["id"] == first[0] for e in lenv.ledger_entries()), what="the first solo task to start")
    lenv.supervisor(1, *FLAGS, extra_env=lease)
    second = submit("solo", [{"seconds": 0}])
    time.sleep(1.5)
    assert lenv.statuses(second) == {second[0]: "pending"}  # the slot is taken on the other supervisor
    doomed.kill_tree()  # SIGKILL, its worker too: nobody releases the lease, it must expire
    killed = time.time()
    assert set(lenv.wait_final(first + second).values()) == {"succeeded"}
    started = {e["id"]: e["t"] for e in lenv.ledger_entries() if e["phase"] == "start" and e["attempt"] == 1}
    # the slot stayed taken until the lease ran out: renewed each second for 3 s, so 2 s at least
    assert started[second[0]] > killed + 1.5, (started, killed)
    assert lenv.store.get(first[0])["attempts"] == 2  # type: ignore[index]


def test_invalid_limits_are_refused_naming_the_value(env: Env) -> None:
    with pytest.raises(InvalidLimit, match=r"rate_limit '100/x': unit must be s, m or h"):
        gta_core.task(rate_limit="100/x")(lambda ctx: None)
    with pytest.raises(InvalidLimit, match=r"concurrency 0: must be a positive int"):
        gta_core.task(concurrency=0)(lambda ctx: None)
    with pytest.raises(InvalidLimit, match=r"concurrency True: must be a positive int"):
        gta_core.task(concurrency=True)(lambda ctx: None)
    with pytest.raises(InvalidLimit, match=r"concurrency_key 'who' is not an argument"):
        gta_core.task(key="t", concurrency=1, concurrency_key="who")(lambda ctx, customer: None)
    with pytest.raises(ValueError, match=r"rate_limit 'fast'"):  # InvalidLimit is a ValueError too
        parse_rate("fast")
    with pytest.raises(InvalidLimit, match="give concurrency or rate_limit"):
        gta_core.limit_queue("q")
    with pytest.raises(InvalidLimit, match="per_key needs a concurrency"):
        gta_core.limit_queue("q", rate_limit="1/s", per_key=True)
    assert parse_rate(" 100 / m ") == Rate(100, 60) and str(Rate(7, 3600)) == "7/h"
    assert issubclass(InvalidLimit, gta_core.GTAError)
    fails(gta("limit", "q", "--concurrency", "0"), "concurrency 0: must be a positive int")
    fails(gta("limit", "q", "--concurrency", "lots"), "concurrency 'lots': must be a positive int")
    fails(gta("limit", "q", "--rate", "100/x"), "rate_limit '100/x': unit must be s, m or h")
    fails(gta("limit", "q"), "give --concurrency N and/or --rate N/UNIT, or --clear")
    fails(gta("limit", "q", "--clear", "--rate", "1/s"), "--clear takes no")
    assert gta_core.limits() == []  # nothing was written


def test_migrate_adds_the_limits_table_and_column_to_an_existing_table(env: Env) -> None:
    db, t = env.runtime.db, env.table
    kept = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1})
    db.execute_sql(f"DROP TABLE {t}_limits")
    db.execute_sql(f"ALTER TABLE {t} DROP COLUMN concurrency_key")
    assert env.store.schema_problems() == ["column concurrency_key is missing"]
    with pytest.raises(SchemaError, match="limits table"):
        env.store.require_schema()
    env.store.forget_limits()
    assert [task.id for task in env.store.lease("w", ["default"], 5, 30)] == [kept]  # an older table: no limits
    ok("migrate")
    ok("migrate")  # idempotent
    env.store.require_schema()
    assert env.store.schema_problems() == []
    gta_core.limit_queue("default", concurrency=1)
    assert gta_core.limits()[0].concurrency == 1
