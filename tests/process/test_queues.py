"""Queue controls (`gta pause`, `gta resume`, `gta queues`, `gta_core.pause_queue`) on every
configured database: a pause holds back a queue on every supervisor sharing the table from its
commit on while other queues drain, and a resume wakes the workers at once."""
from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from typing import Any

import pytest

import gta_core
from gta_core.db.connect import open_database
from gta_core.db.transactions import in_transaction
from gta_core.store.task_store import NewTask, TaskStore

from ..support.cli import environ, fails, gta, ok
from ..support.helpers import Env, wait_for

#: both sleep this long between polls unless woken, so a start sooner than this after a resume
#: was the wake-up's doing
SCAN = 30.0
#: a generous bound on the wake-up latency, for a loaded machine: starting `gta` takes a second
WAKE_LATENCY = 10.0
#: a lease in flight at the pause's commit may still start its task this long after it
IN_FLIGHT = 2.0


def starts(env: Env, queue: str) -> list[dict[str, Any]]:
    return sorted((entry for entry in env.ledger_entries() if entry["phase"] == "start" and entry["queue"] == queue),
                  key=lambda entry: entry["t"])


def submit(queue: str, count: int, seconds: float) -> list[int]:
    requests = [gta_core.TaskRequest("sleepy", {"seconds": seconds, "n": n}, queue=queue) for n in range(count)]
    return gta_core.submit_many(gta_core.OWN_TRANSACTION, requests)


def lease_times(env: Env, ids: list[int]) -> dict[int, dt.datetime]:
    """When each started task was last leased (``started_at``, the database clock)."""
    return {task_id: moment for task_id in ids
            if (moment := (env.store.get(task_id) or {}).get("started_at")) is not None}


def test_pause_holds_a_queue_on_every_supervisor_and_resume_wakes_them(env: Env, backend: str) -> None:
    held = submit("q", 60, 0.3)
    flags = ("--queues", "q,other", "--threads", "2", "--scan-interval", f"{SCAN:g}s",
             "--instant-scan-interval", f"{SCAN:g}s")
    first, second = env.supervisor(1, *flags), env.supervisor(1, *flags)
    wait_for(lambda: len(starts(env, "q")) >= 4, what="q's first tasks to start")

    out = ok("pause", "q", "--reason", "downstream broken", env_vars=environ())
    paused_at = time.time()  # the pause committed before `gta pause` returned
    assert "paused queue 'q'" in out and "unknown" not in out
    other = submit("other", 40, 0.05)  # submitting works while paused; other queues drain
    env.wait_final(other)
    assert set(env.statuses(other).values()) == {"succeeded"}
    time.sleep(IN_FLIGHT)

    # no task of q started on either supervisor after the pause, beyond a lease in flight at its commit
    late = [entry for entry in starts(env, "q") if entry["t"] > paused_at + IN_FLIGHT]
    assert late == [], late
    served_other = {entry["pid"] for entry in starts(env, "other")}
    if backend == "mariadb":  # a lease of two queues sorts, locking every due row: the other may find none
        assert served_other and served_other <= set(first.worker_pids() + second.worker_pids())
    else:
        assert served_other == set(first.worker_pids() + second.worker_pids())
    ran = {entry["id"] for entry in starts(env, "q")}
    leased = lease_times(env, sorted(ran))
    epoch = dt.datetime.fromtimestamp(paused_at, dt.timezone.utc)
    # and none was leased after it (a second's slack: MySQL reads, then stamps the lease)
    assert [task_id for task_id, moment in leased.items() if moment > epoch + dt.timedelta(seconds=1)] == []
    # tasks running at the pause finished normally; the rest wait
    ends = {entry["id"] for entry in env.ledger_entries() if entry["phase"] == "end"}
    env.wait_final(sorted(ran))
    assert ran <= ends
    waiting = [task_id for task_id in held if task_id not in ran]
    assert len(waiting) >= 30 and set(env.statuses(waiting).values()) == {"pending"}
    listed = {queue["name"]: queue for queue in json.loads(ok("queues", "--json", env_vars=environ()))}
    assert listed["q"]["paused"] is True and listed["q"]["reason"] == "downstream broken"
    assert listed["q"]["pending"] == len(waiting) and listed["q"]["by"]
    assert listed["default"]["paused"] is False  # the queue gta's own settings serve is always listed

    # both supervisors are idle now, polling every SCAN seconds: the resume must wake them
    time.sleep(1.0)
    before = time.time()
    assert "resumed queue 'q'" in ok("resume", "q", env_vars=environ())
    resumed_at = time.time()
    woken = wait_for(lambda: [entry for entry in starts(env, "q") if entry["t"] > before], WAKE_LATENCY,
                     "q's waiting tasks to start after the resume")
    assert woken[0]["t"] - resumed_at < WAKE_LATENCY < SCAN
    env.wait_final(held)
    assert set(env.statuses(held).values()) == {"succeeded"}
    woke = {entry["pid"] for entry in starts(env, "q") if entry["t"] > before}
    if backend != "mariadb":  # there a lease of two queues sorts, locking every due row: the other skips them all
        assert woke == set(first.worker_pids() + second.worker_pids())
    assert env.runs_by_task("start") == {task_id: 1 for task_id in held + other}


def test_a_supervisor_started_after_the_pause_obeys_it(env: Env) -> None:
    change = gta_core.pause_queue("q", reason="data fix", by="ops@example")
    assert change.changed and change.known is False  # nothing names q yet: allowed, and said
    held = submit("q", 5, 0.01)
    other = submit("other", 5, 0.01)
    env.supervisor(1, "--queues", "q,other")
    env.wait_final(other)
    time.sleep(1.0)
    assert set(env.statuses(held).values()) == {"pending"}
    assert gta_core.resume_queue("q").changed
    env.wait_final(held)


def test_pause_resume_and_queues_say_what_they_did(env: Env) -> None:
    out = ok("pause", "nobody-serves-this", env_vars=environ())
    assert "paused queue 'nobody-serves-this'" in out
    assert "unknown" in out and "paused anyway" in out
    again = ok("pause", "nobody-serves-this", "--reason", "other", env_vars=environ())
    assert "already paused since" in again and "nothing changed" in again
    state = json.loads(ok("pause", "default", "--json", env_vars=environ()))
    assert state["changed"] is True and state["known"] is True and state["queue"]["paused"] is True
    table = ok("queues", env_vars=environ())
    header, *rows = table.splitlines()
    assert header.split()[:3] == ["QUEUE", "STATE", "SINCE"]
    assert {row.split()[0]: row.split()[1] for row in rows} == {"default": "paused", "nobody-serves-this": "paused"}
    assert "-" == [row for row in rows if row.startswith("nobody")][0].split()[-1]  # no reason given
    assert "resumed queue 'default'" in ok("resume", "default", env_vars=environ())
    assert "was not paused" in ok("resume", "default", env_vars=environ())
    states = {state.name: state for state in gta_core.queues()}
    assert states["default"].paused is False and states["default"].by  # who resumed it, and when
    assert states["nobody-serves-this"].paused is True and states["nobody-serves-this"].reason is None


@pytest.mark.parametrize("name", ["", "a ", "x" * 192, "nul\x00"], ids=["empty", "trailing-space", "long", "nul"])
def test_a_bad_queue_name_is_refused_in_one_line(env: Env, name: str) -> None:
    for command in ("pause", "resume"):
        if "\x00" not in name:  # no command line can carry a NUL
            fails(gta(command, name, env_vars=environ()), "queue name")
        with pytest.raises(gta_core.InvalidQueue, match="queue name"):
            getattr(gta_core, f"{command}_queue")(name)
    assert gta_core.queues() == [gta_core.QueueState("default", False, None, None, None, 0, 0, None)]


def test_migrate_adds_the_queues_table_to_a_table_of_the_same_version(env: Env) -> None:
    """A table migrated before queue controls existed: the version does not change (an older
    supervisor keeps working on it), `gta migrate` adds the table and this GTA asks for it."""
    env.runtime.db.execute_sql(f"DROP TABLE {env.table}_queues")
    with pytest.raises(gta_core.SchemaError, match="gta migrate"):
        env.store.require_schema()
    fails(gta("queues", env_vars=environ()), "gta migrate")
    assert "is at schema version 2" in ok("migrate", env_vars=environ())
    env.store.require_schema()
    assert gta_core.pause_queue("q").changed


def test_the_paused_gauge_follows_the_database(env: Env, backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("the gauge is read by the same queries on every database; one is enough here")
    from ..support.metrics import scrape, with_metrics

    _, bind = with_metrics(env, 1)
    gta_core.pause_queue("default")
    gta_core.pause_queue("elsewhere")

    def paused() -> dict[str, float]:
        return {dict(labels)["queue"]: value for (name, labels), value in scrape(bind).items()
                if name == "gta_queue_paused"}
    wait_for(lambda: paused() == {"default": 1.0, "elsewhere": 1.0}, what="both queues paused in /metrics")
    gta_core.resume_queue("default")
    wait_for(lambda: paused() == {"default": 0.0, "elsewhere": 1.0}, what="default resumed in /metrics")


def test_the_lease_skips_only_paused_queues(db_url: str) -> None:
    """The store on its own: a paused queue is not leased, others are, a resumed one is again."""
    store = TaskStore(open_database(db_url), f"gta_t_{secrets.token_hex(4)}")
    store.migrate()
    try:
        in_transaction(store.db, lambda: store.insert([NewTask("k", queue, 0, "{}", None, 3)
                                                       for queue in ("a", "b") for _ in range(3)]))
        store.pause_queue("a", "me", None)
        assert {task.queue for task in store.lease("w", ["a", "b"], 10, 30)} == {"b"}
        store.resume_queue("a", "me")
        assert [task.queue for task in store.lease("w", ["a", "b"], 10, 30)] == ["a"] * 3
        control = store.queue_controls()[0]
        assert control.name == "a" and not control.paused and control.changed_at and control.changed_by == "me"
    finally:
        store.drop()
        store.db.close()
