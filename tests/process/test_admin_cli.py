"""The admin command line, run as the installed ``gta`` entry point in a subprocess, on every
configured database: each command's output and effect, and its error paths (one line on
stderr, a non-zero exit, never a traceback, nothing written)."""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

import gta_core
from gta_core.admin import BUILT_IN_KEYS
from gta_core.runtime import Runtime
from gta_core.store.inserts import NewTask
from gta_core.store.sql.statements import RERUN_ERROR_PREFIX, SCHEMA_VERSION

from ..support.cli import environ, fails, gta, gta_bin, ok
from ..support.helpers import Env, wait_for
from ..support.rows import OWNER, age, count, make

COMMANDS = ("migrate", "submit", "list", "show", "retry", "cancel", "purge", "stats", "handlers", "demo", "pause",
            "resume", "queues")
UNREACHABLE = ["postgresql://postgres@127.0.0.1:1/test", "mysql://root@127.0.0.1:1/test"]
DAY = 86400.0


def row(env: Env, task_id: int) -> dict[str, Any]:
    found = env.store.get(task_id)
    assert found is not None, f"task {task_id} vanished"
    return found


def listed_ids(output: str) -> list[int]:
    return [int(line.split()[0]) for line in output.splitlines()[1:] if line.strip()]


def db_now(env: Env) -> dt.datetime:
    store = env.store
    value = store.db.execute_sql(f"SELECT {store.sql.dialect.now}").fetchone()[0]
    moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=dt.timezone.utc)


# -- help and usage -------------------------------------------------------------------------------
def test_every_command_has_help() -> None:
    top = ok("--help", env_vars={**os.environ})
    for command in COMMANDS:
        assert command in top
        text = ok(command, "--help", env_vars={**os.environ})
        assert text.startswith(f"usage: gta {command}"), text


@pytest.mark.parametrize("args, fragments", [
    ([], ["COMMAND"]),
    (["frobnicate"], ["frobnicate"]),
    (["show"], ["id"]),
    (["show", "seven"], ["seven"]),
    (["list", "--limit", "0"], ["--limit"]),
    (["cancel"], ["ID"]),
    (["retry"], ["ids or --status"]),
    (["retry", "1", "--status", "failed"], ["ids or --status"]),
    (["purge"], ["--older-than"]),
], ids=["no-command", "unknown-command", "show-no-id", "show-bad-id", "limit-zero", "cancel-no-id",
        "retry-nothing", "retry-both", "purge-no-age"])
def test_usage_errors_are_one_line(tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    url = f"sqlite:///{tmp_path / 'never.db'}"
    fails(gta(*args, env_vars={**os.environ, "GTA_DATABASE_URL": url}), *fragments)
    assert not (tmp_path / "never.db").exists()


@pytest.mark.parametrize("url", UNREACHABLE, ids=["postgres", "mysql"])
def test_unreachable_database_is_one_line(tmp_path: Path, url: str) -> None:
    variables = {**os.environ, "GTA_DATABASE_URL": url}
    for command in (["list"], ["show", "1"], ["retry", "1"], ["retry", "--status", "failed"], ["cancel", "1"],
                    ["purge", "--older-than", "7d"], ["stats"]):
        fails(gta(*command, env_vars=variables), "cannot reach database", code=1)  # 1: the database, not usage


READ_OR_CHANGE = (["list"], ["show", "1"], ["stats"], ["queues"], ["limits"], ["cancel", "1"], ["retry", "1"],
                  ["purge", "--older-than", "7d"], ["pause", "mail"], ["resume", "mail"], ["submit", "record"],
                  ["limit", "mail", "--concurrency", "2"])


def test_commands_on_tasks_create_no_database_file(tmp_path: Path) -> None:
    """A typo in a SQLite URL is said as such, and leaves no empty database behind."""
    typo = tmp_path / "typo.db"
    for command in READ_OR_CHANGE:
        fails(gta("--database-url", f"sqlite:///{typo}", *command), "does not exist", str(typo), "gta migrate")
        assert not typo.exists(), command
    ok("--database-url", f"sqlite:///{typo}", "migrate")
    assert typo.exists()


def test_a_plugin_that_cannot_load_or_a_name_no_plugin_has_is_said(env: Env) -> None:
    fails(gta("list", "--plugin", "no_such.module"), "could not import plugin module 'no_such.module'")
    fails(gta("--disable-plugin", "nonexistent", "list"), "cannot disable 'nonexistent'", "no plugin has that name")
    fails(gta("list", env_vars=environ(GTA_DISABLE_PLUGINS="monitr")), "cannot disable 'monitr'")


# -- migrate, submit, handlers ----------------------------------------------------------------------
def test_migrate_and_submit(env: Env) -> None:
    table = f"gta_cli_{secrets.token_hex(4)}"
    variables = environ(GTA_TABLE=table)
    try:
        assert f"created {table}" in ok("migrate", env_vars=variables)
        again = ok("migrate", env_vars=variables)
        assert "created" not in again and f"schema version {SCHEMA_VERSION}" in again
    finally:
        cleanup = Runtime(gta_core.load_settings({"database_url": env.db_url, "table": table}, environ={}))
        cleanup.store.drop()
        cleanup.db.close()

    plain = int(ok("submit", "record", "--args", '{"n": 7}'))
    later = int(ok("submit", "greet", "--args", '{"name": "Ada"}', "--delay", "5m", "--queue", "mail",
                   "--priority", "3"))
    first, second = row(env, plain), row(env, later)
    assert (first["key"], first["status"], json.loads(first["args"]), first["queue"]) == (
        "record", "pending", {"n": 7}, "default")
    assert (second["queue"], second["priority"], json.loads(second["args"])) == ("mail", 3, {"name": "Ada"})
    assert second["run_at"] - second["created_at"] >= dt.timedelta(seconds=299)

    fails(gta("submit", "record", "--args", "{oops"), "--args is not valid JSON")
    fails(gta("submit", "record", "--args", "[1]"), "dict")
    fails(gta("submit", "nosuchtask"), "'nosuchtask'")
    fails(gta("submit", "record", "--delay", "soon"), "--delay", "'soon'")
    fails(gta("submit", "greet", "--args", '{"name": 1, "shout": true}'), "shout")
    assert count(env) == 2


def test_handlers_lists_tasks_with_plugin_options_signature_and_schedule(env: Env) -> None:
    lines = {line.split("(", 1)[0]: line for line in ok("handlers").splitlines() if line.strip()}
    assert {"gta_monitor", "gta_cleanup", "record", "greet", "example_double"} <= set(lines)
    assert lines["greet"].startswith("greet(ctx: 'TaskContext', name: 'str', punctuation: 'str' = '!') -> 'str'")
    assert "plugin tests.handlers.tasks" in lines["greet"] and "max_attempts 5" in lines["greet"]
    monitor, cleanup = lines["gta_monitor"], lines["gta_cleanup"]
    assert "plugin monitor" in monitor and "periodic monitor every 60s" in monitor and "max_attempts 2" in monitor
    assert "timeout 120" in monitor and "priority 1000" in monitor
    assert "plugin cleanup" in cleanup and "periodic cleanup every 300s" in cleanup
    shorter = ok("handlers", env_vars=environ(GTA_MONITOR_INTERVAL="5s", GTA_CLEANUP_INTERVAL="1h"))
    assert "periodic monitor every 5s" in shorter and "timeout 10" in shorter
    assert "periodic cleanup every 3600s" in shorter
    without = ok("--disable-plugin", "monitor", "--disable-plugin", "cleanup", "handlers")
    assert "gta_monitor(" not in without and "gta_cleanup(" not in without and "record(" in without
    fails(gta("handlers", env_vars=environ(GTA_MONITOR_INTERVAL="often")), "monitor_interval")
    both = ("--plugin", "tests.handlers.tasks", "--plugin", "tests.handlers.async_tasks")
    asynchronous = {line.split("(", 1)[0]: line for line in ok(*both, "handlers").splitlines()}
    assert "async arecord" in asynchronous and "record" in asynchronous  # `async def` handlers are marked
    described = {item["key"]: item["async"] for item in json.loads(ok(*both, "handlers", "--json"))}
    assert described["arecord"] is True and described["record"] is False


# -- list and show ---------------------------------------------------------------------------------
def test_list_filters_limits_and_json(env: Env) -> None:
    done = make(env, "succeeded")
    failed = make(env, "failed", key="always_fails")
    mail = make(env, "pending", queue="mail")
    greet = make(env, "pending", key="greet", args={"name": "Ada"})

    table = ok("list")
    assert table.splitlines()[0].split()[:4] == ["ID", "STATUS", "QUEUE", "KEY"]
    assert listed_ids(table) == [greet, mail, failed, done]  # newest first
    failed_line = next(line for line in table.splitlines() if line.split()[0] == str(failed))
    assert "always_fails" in failed_line and "1/3" in failed_line and "ValueError: boom" in failed_line
    assert listed_ids(ok("list", "--status", "failed")) == [failed]
    assert listed_ids(ok("list", "--queue", "mail")) == [mail]
    assert listed_ids(ok("list", "--key", "greet")) == [greet]
    assert listed_ids(ok("list", "--key", "record", "--status", "pending")) == [mail]
    assert listed_ids(ok("list", "--limit", "2")) == [greet, mail]
    assert ok("list", "--status", "cancelled").strip() == "no matching tasks"

    shown = json.loads(ok("list", "--json", "--queue", "default"))
    assert [(task["id"], task["status"], task["key"]) for task in shown] == [
        (greet, "pending", "greet"), (failed, "failed", "always_fails"), (done, "succeeded", "record")]
    assert shown[0]["args"] == {"name": "Ada"}  # an object, not JSON text in a string
    assert dt.datetime.fromisoformat(shown[2]["finished_at"]) == row(env, done)["finished_at"]
    assert json.loads(ok("list", "--json", "--key", "nothing")) == []

    fails(gta("list", "--status", "lost"), "invalid choice", "'lost'")
    fails(gta("list", "--limit", "many"), "--limit")


def test_list_leaves_out_the_built_in_periodic_runs_unless_asked(env: Env) -> None:
    mine = make(env, "pending")
    builtin = env.store.insert([NewTask(key, "default", 1000, "{}", None, 2) for key in BUILT_IN_KEYS])
    assert listed_ids(ok("list")) == [mine]
    assert listed_ids(ok("list", "--all")) == [*reversed(builtin), mine]
    assert listed_ids(ok("list", "--key", "gta_monitor")) == [builtin[0]]
    assert "--all" in ok("list", "--help")


def test_show_prints_args_attempts_timestamps_and_traceback(env: Env) -> None:
    failed = make(env, "failed", key="always_fails", error="the disk is full")
    stored = row(env, failed)
    text = ok("show", str(failed))
    fields = dict(line.split(": ", 1) for line in text.split("\n\nlast error:\n")[0].strip().splitlines()
                  if ": " in line)
    fields = {name.strip(): value for name, value in fields.items()}
    assert (fields["id"], fields["key"], fields["status"], fields["attempts"]) == (
        str(failed), "always_fails", "failed", "1 of 3")
    assert fields["args"] == "{}"
    for column in ("created_at", "started_at", "finished_at", "updated_at", "run_at"):
        assert dt.datetime.fromisoformat(fields[column]) == stored[column], column
    error = text.split("\n\nlast error:\n", 1)[1]
    assert error.startswith("ValueError: the disk is full")
    assert "Traceback (most recent call last)" in error and "raise ValueError(error)" in error

    shown = json.loads(ok("show", str(failed), "--json"))
    assert (shown["status"], shown["attempts"], shown["max_attempts"]) == ("failed", 1, 3)
    assert "Traceback" in shown["last_error"] and shown["lease_owner"] == OWNER
    assert dt.datetime.fromisoformat(shown["finished_at"]) == stored["finished_at"]

    fails(gta("show", "987654321"), "no task with id 987654321")
    fails(gta("show", "987654321", "--json"), "no task with id 987654321")


def test_control_characters_from_the_table_reach_the_terminal_escaped(env: Env) -> None:
    """Whoever submits writes queue names and error texts; printed raw, an escape sequence in
    them would recolour, retitle or clear the operator's terminal."""
    queue = "q\x1b[31mred\x07"
    failed = make(env, "failed", queue=queue, error="boom \x1b]0;pwned\x07 \u202eevil\r\x1b[2J\x9b")
    make(env, "pending", queue=queue)  # gta queues lists queues with pending or running tasks
    raw = ("\x1b", "\x07", "\u202e", "\r", "\x9b")
    outputs = {args: ok(*args) for args in (("list",), ("show", str(failed)), ("queues",), ("stats",))}
    for args, output in outputs.items():
        assert not any(character in output for character in raw), (args, output)
        assert "q\\x1b[31mred\\x07" in output, (args, output)
    error = outputs["show", str(failed)].split("\n\nlast error:\n", 1)[1]
    assert "ValueError: boom \\x1b]0;pwned\\x07 \\u202eevil\\x0d\\x1b[2J\\x9b" in error, error
    assert len(error.splitlines()) > 3  # the traceback keeps its lines
    assert json.loads(ok("show", str(failed), "--json"))["queue"] == queue  # JSON: escaped by json, exact


# -- retry and cancel --------------------------------------------------------------------------------
def test_retry_by_id_resets_failed_and_cancelled_tasks(env: Env) -> None:
    failed = make(env, "failed", key="always_fails")
    cancelled = make(env, "cancelled")
    done = make(env, "succeeded")
    pending = make(env, "pending", queue="elsewhere")
    before = {task_id: row(env, task_id) for task_id in (failed, cancelled, done, pending)}

    for args, fragment in ((["retry", str(failed), str(done)], f"task {done} succeeded: only failed or cancelled"),
                           (["retry", str(failed), str(pending)], f"task {pending} is pending"),
                           (["retry", str(failed), "987654321"], "no task with id 987654321")):
        fails(gta(*args), fragment)
        assert {task_id: row(env, task_id) for task_id in before} == before, "a refused retry changed a row"

    started = db_now(env)
    out = ok("retry", str(failed), str(cancelled))
    assert out.splitlines() == [f"retried task {failed} (was failed)", f"retried task {cancelled} (was cancelled)"]
    for task_id in (failed, cancelled):
        again = row(env, task_id)
        assert (again["status"], again["attempts"], again["lease_owner"], again["finished_at"]) == (
            "pending", 0, None, None)
        assert again["run_at"] >= started - dt.timedelta(seconds=1)
        assert again["last_error"].startswith(RERUN_ERROR_PREFIX)
    assert "ValueError: boom" in row(env, failed)["last_error"]
    assert row(env, done) == before[done]
    # due now, and leased like any other task: this attempt is the first again
    leased = {task.id: task.attempts for task in env.store.lease("after-retry", ("default",), 10, 30.0)}
    assert leased == {failed: 1, cancelled: 1}


def test_retry_by_status(env: Env) -> None:
    failed = [make(env, "failed", key="always_fails") for _ in range(3)]
    cancelled = make(env, "cancelled")
    assert ok("retry", "--status", "failed").strip() == "retried 3 failed task(s)"
    assert env.statuses([*failed, cancelled]) == {**{task_id: "pending" for task_id in failed},
                                                  cancelled: "cancelled"}
    assert all(row(env, task_id)["attempts"] == 0 for task_id in failed)
    assert ok("retry", "--status", "failed").strip() == "retried 0 failed task(s)"
    assert ok("retry", "--status", "cancelled").strip() == "retried 1 cancelled task(s)"
    assert row(env, cancelled)["status"] == "pending"
    fails(gta("retry", "--status", "succeeded"), "invalid choice", "'succeeded'")
    fails(gta("retry", "--status", "running"), "invalid choice")


def test_cancel(env: Env) -> None:
    done = make(env, "succeeded")
    running = make(env, "running")
    pending = make(env, "pending")
    fails(gta("cancel", str(pending), "987654321"), "no task with id 987654321")
    assert env.statuses([pending, running]) == {pending: "pending", running: "running"}

    out = ok("cancel", str(pending), str(running), str(done))
    assert out.splitlines() == [f"cancelled task {pending} (was pending)", f"cancelled task {running} (was running)",
                                f"task {done} had already succeeded: not cancelled"]
    assert env.statuses([pending, running, done]) == {pending: "cancelled", running: "cancelled", done: "succeeded"}
    assert row(env, pending)["finished_at"] is not None
    assert not env.store.complete(OWNER, running), "the cancelled task's worker could still record success"
    assert env.store.lease("after-cancel", ("default",), 10, 30.0) == []
    forced = make(env, "running")
    assert ok("cancel", "--force", str(forced)).strip() == f"cancelled task {forced} (was running)"
    assert env.store.cancelled_of(OWNER, [forced]) == {forced: True}


# -- purge --------------------------------------------------------------------------------------------
def test_purge_deletes_old_finished_tasks_only(env: Env) -> None:
    old = {status: [make(env, status, key="always_fails" if status == "failed" else "record") for _ in range(2)]
           for status in ("succeeded", "failed", "cancelled")}
    young = make(env, "succeeded")
    running = make(env, "running")
    pending = make(env, "pending")
    everything = [task_id for ids in old.values() for task_id in ids]
    age(env, everything, "finished_at", 10 * DAY)
    age(env, [running, pending], "finished_at", 10 * DAY)  # never the case, but status alone decides
    total = count(env)

    fails(gta("purge", "--older-than", "a week"), "--older-than", "'a week'")
    fails(gta("purge", "--older-than", "-7d"), "--older-than")
    fails(gta("purge", "--older-than", "7d", "--status", "pending"), "invalid choice", "'pending'")
    assert count(env) == total

    small_batches = environ(GTA_CLEANUP_BATCH="1")
    assert ok("purge", "--older-than", "7d", "--status", "failed", env_vars=small_batches).startswith(
        "deleted 2 failed task(s) finished more than 7d ago")
    assert env.statuses(old["failed"]) == {}
    assert ok("purge", "--older-than", "11d").startswith("deleted 0 ")
    assert ok("purge", "--older-than", "9d", env_vars=small_batches).startswith(
        "deleted 4 succeeded/failed/cancelled task(s)")
    assert set(env.statuses([*everything, young, running, pending])) == {young, running, pending}
    assert ok("purge", "--older-than", "0s").startswith("deleted 1 ")  # the young one, finished by now
    assert env.statuses([young, running, pending]) == {running: "running", pending: "pending"}


# -- stats --------------------------------------------------------------------------------------------
def stats_rows(output: str) -> dict[str, list[str]]:
    lines = output.strip().splitlines()
    header = next(index for index, line in enumerate(lines) if line.startswith("QUEUE"))
    assert lines[header].split() == ["QUEUE", "PENDING", "RUNNING", "WAITING", "SUCCEEDED", "FAILED", "CANCELLED",
                                     "OLDEST", "DUE", "SUCCEEDED/MIN"]
    return {line.split()[0]: line.split()[1:] for line in lines[header + 1:] if line.strip()
            and not line.startswith("warning: ")}


def test_stats_counts_ages_and_throughput(env: Env) -> None:
    recent = [make(env, "succeeded") for _ in range(3)]
    earlier = make(env, "succeeded")
    age(env, [earlier], "finished_at", 120)  # out of the last minute
    make(env, "failed", key="always_fails")
    make(env, "running", queue="mail")
    make(env, "cancelled", queue="mail")
    waiting = make(env, "pending", queue="mail")
    age(env, [waiting], "run_at", 3 * 3600)
    gta_core.submit(gta_core.OWN_TRANSACTION,
                    "record", {"n": 1}, queue="mail", delay=3600)  # pending, not due: not the oldest

    output = ok("stats")
    rows = stats_rows(output)
    assert rows["default"] == ["0", "0", "0", "4", "1", "0", "-", "3"]
    assert rows["mail"][:6] == ["2", "1", "0", "0", "0", "1"] and rows["mail"][7] == "0"
    assert re.fullmatch(r"3\.0h", rows["mail"][6]), rows["mail"]
    assert rows["(all)"] == ["2", "1", "0", "4", "1", "1", rows["mail"][6], "3"]
    # no supervisor runs: the due task is one no live supervisor handles (the delayed one is not due)
    assert output.strip().splitlines()[-1] == ("warning: no live supervisor handles key 'record' in queue 'mail': "
                                               "1 due task(s) waiting")
    assert len(recent) == 3

    fails(gta("stats", "--interval", "now"), "--interval")
    fails(gta("stats", "--watch", "--interval", "0s"), "--interval")


def test_stats_watch_redraws_until_ctrl_c(env: Env) -> None:
    make(env, "succeeded")
    screen = env.tmp_path / "screen.txt"
    with open(screen, "wb") as out, open(env.tmp_path / "watch.err", "wb") as err:
        process = subprocess.Popen([gta_bin(), "stats", "--watch", "--interval", "0.2s"], stdout=out, stderr=err,
                                   env=environ())
    try:
        wait_for(lambda: screen.read_bytes().count(b"\x1b[H\x1b[2J") >= 2, 20, "two redraws")
        make(env, "failed", key="always_fails")  # shows up in a later frame
        wait_for(lambda: stats_rows(screen.read_text().rsplit("\x1b[H\x1b[2J", 1)[1])["default"][4] == "1", 20,
                 "the failed task in a redraw")
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    frames = screen.read_text().split("\x1b[H\x1b[2J")[1:]
    assert len(frames) >= 3
    assert stats_rows(frames[0])["default"][3] == "1"
    assert (env.tmp_path / "watch.err").read_text() == ""


# -- one CLI: options on either side of the command, --json everywhere, a closed pipe ------------------
#: every command that prints data, with arguments that make it print some
JSON_COMMANDS = ("migrate", "submit", "list", "show", "retry", "cancel", "purge", "stats", "handlers",
                 "pause", "resume", "queues")


def test_every_command_that_prints_data_has_json() -> None:
    assert set(JSON_COMMANDS) == set(COMMANDS) - {"demo"}
    for command in JSON_COMMANDS:
        assert "--json" in ok(command, "--help", env_vars={**os.environ}), command


def test_global_options_go_before_or_after_the_command(env: Env) -> None:
    table = f"gta_cli_{secrets.token_hex(4)}"
    clean = {name: value for name, value in os.environ.items() if not name.startswith("GTA_")}
    try:
        created = ok("migrate", "--database-url", env.db_url, "--table", table, env_vars=clean)
        assert f"created {table}" in created
        assert f"created {table}" not in ok("--table", table, "migrate", "--database-url", env.db_url,
                                            env_vars=clean)
        task_id = int(ok("submit", "record", "--args", '{"n": 1}', "--database-url", env.db_url, "--table", table,
                         "--plugin", "tests.handlers.tasks", env_vars=clean))
        shown = json.loads(ok("--database-url", env.db_url, "show", str(task_id), "--json", "--table", table,
                              env_vars=clean))
        assert (shown["id"], shown["key"]) == (task_id, "record")
    finally:
        cleanup = Runtime(gta_core.load_settings({"database_url": env.db_url, "table": table}, environ={}))
        cleanup.store.drop()
        cleanup.db.close()
    # plugin flags from both sides add up; a flag after the command wins over the same before it
    keys = {handler["key"] for handler in json.loads(ok("--disable-plugin", "example", "handlers", "--json",
                                                        "--disable-plugin", "monitor",
                                                        "--plugin", "tests.handlers.tasks"))}
    assert "record" in keys and not keys & {"example_double", "gta_monitor"} and "gta_cleanup" in keys
    fails(gta("--table", env.table, "list", "--table", "bad-name;"), "table")


def test_json_of_every_command(env: Env) -> None:
    migrated = json.loads(ok("migrate", "--json"))
    assert migrated == {"table": env.table, "database": migrated["database"], "version_before": SCHEMA_VERSION,
                        "version": SCHEMA_VERSION}
    submitted = json.loads(ok("submit", "greet", "--args", '{"name": "Ada"}', "--json"))["id"]
    assert row(env, submitted)["key"] == "greet"
    failed = make(env, "failed", key="always_fails", queue="q2")
    done = make(env, "succeeded", queue="q3")
    age(env, [done], "finished_at", 10 * DAY)

    stats = json.loads(ok("stats", "--json"))
    by_queue = {line["queue"]: line for line in stats["queues"]}
    assert by_queue["default"]["pending"] == 1 and by_queue["q2"]["failed"] == 1
    assert stats["all"]["pending"] == 1 and stats["all"]["failed"] == 1 and stats["all"]["succeeded"] == 1
    assert by_queue["default"]["oldest_due_seconds"] >= 0 and by_queue["q2"]["oldest_due_seconds"] is None
    assert stats["table"] == env.table

    handlers = {handler["key"]: handler for handler in json.loads(ok("handlers", "--json"))}
    assert handlers["greet"]["plugin"] == "tests.handlers.tasks" and handlers["greet"]["signature"].startswith("(")
    assert handlers["gta_monitor"]["periodic"] and handlers["record"]["periodic"] == []

    assert json.loads(ok("retry", str(failed), "--json")) == [{"id": failed, "retried": True, "was": "failed"}]
    assert json.loads(ok("cancel", str(failed), str(done), "--json")) == [
        {"id": failed, "cancelled": True, "was": "pending"}, {"id": done, "cancelled": False, "was": "succeeded"}]
    assert json.loads(ok("retry", "--status", "cancelled", "--json")) == {"status": "cancelled", "retried": 1}
    assert json.loads(ok("purge", "--older-than", "7d", "--json")) == {
        "deleted": 1, "statuses": ["succeeded", "failed", "cancelled"], "older_than_seconds": 7 * DAY}


def test_a_closed_pipe_ends_the_command_quietly(env: Env) -> None:
    """``gta show ID | head``: the reader is gone before gta writes (a real pipe, its read end
    closed at once, so the write fails whatever the timing)."""
    task_id = make(env, "failed", key="always_fails")
    for args in (["show", str(task_id)], ["show", str(task_id), "--json"], ["list"], ["stats"]):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            result = subprocess.run([gta_bin(), *args], stdout=write_end, stderr=subprocess.PIPE, text=True,
                                    timeout=30, env=environ())
        finally:
            os.close(write_end)
        assert (result.returncode, result.stderr) == (0, ""), (args, result.stderr)
    head = subprocess.run(f"'{gta_bin()}' list --limit 1 | head -c 1", shell=True, capture_output=True, text=True,
                          timeout=30, env=environ())
    assert (head.returncode, head.stdout, head.stderr) == (0, "I", "")
