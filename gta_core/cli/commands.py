"""What the admin commands print (``gta list``, ``show``, ``retry``, ``cancel``, ``purge``, ``stats``,
``handlers``, ``pause``, ``resume``, ``queues``, ``limit``, ``limits``); `main` parses the command
line and calls these, the operations they share with the dashboard are `gta_core.admin`'s.

Every function takes the configured `Runtime` and returns the exit code. Problems are raised as
`GTAError` (one line, exit 2 in the CLI); nothing is written when a command refuses.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from ..admin import (
    BUILT_IN_KEYS,
    STATUSES,
    ids_with_status,
    purge_finished,
    ready,
    require_tasks,
    rerun_batches,
    rerun_tasks,
    stats_data,
)
from ..attempts import Attempt, timeline
from ..config import format_duration, parse_duration
from ..db.connect import check_connection
from ..errors import GTAError, InvalidLimit, TaskNotFound
from ..limits import LimitState, check_queue_limit, limit_queue, limits, unlimit_queue
from ..plugins import Registry, periodic_definitions
from ..queues import QueueState, actor, check_name, pause_queue, queues, resume_queue
from ..runtime import Runtime
from ..schedules import Periodic
from ..store.attempts import CANCELLED, RELEASED
from ..store.roster import Unhandled
from ..store.sql.statements import FINAL_STATUSES
from ..submit import cancel as cancel_tasks
from .terminal import printable


def duration(option: str, text: str) -> float:
    """A duration option's value in seconds, or a `GTAError` naming the option."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise GTAError(f"{option}: {exc}") from None


def _ended(status: str) -> str:
    """How a task ended, after "had already": "succeeded", "failed", "been cancelled"."""
    return "been cancelled" if status == "cancelled" else status


def _when(moment: dt.datetime | None) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _first_line(text: str | None, width: int = 60) -> str:
    line = (text or "").strip().split("\n", 1)[0]
    return line if len(line) <= width else line[:width - 1] + "…"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], right: Sequence[int] = ()) -> str:
    """Rows in aligned columns, control characters escaped; columns whose index is in ``right``
    are right-aligned."""
    cells = [list(map(str, header))] + [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    lines = []
    for row in cells:
        parts = [cell.rjust(width) if column in right else cell.ljust(width)
                 for column, (cell, width) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _json(value: Any) -> str:
    return json.dumps(value, default=str, indent=2)


def _print_json(value: Any) -> int:
    print(_json(value))
    return 0


def _decoded(task: dict[str, Any]) -> dict[str, Any]:
    """A task row for JSON output: ``args``, ``context`` and ``result`` as JSON values, not JSON text (a
    value that is not valid JSON, written by hand, stays the text it is)."""
    decoded = dict(task)
    for column in ("args", "context", "result"):
        if isinstance(decoded.get(column), str):
            try:
                decoded[column] = json.loads(decoded[column])
            except (ValueError, RecursionError):
                pass
    return decoded


def list_tasks(runtime: Runtime, status: str | None, queue: str | None, key: str | None, limit: int,
               as_json: bool, everything: bool = False) -> int:
    """``gta list``; the built-in periodic tasks' runs only with ``everything`` (``--all``) or a ``key``."""
    ready(runtime)
    hidden = () if everything or key is not None else BUILT_IN_KEYS
    tasks = runtime.store.list_tasks(status=status, queue=queue, key=key, limit=limit, hidden_keys=hidden)
    if as_json:
        return _print_json([_decoded(task) for task in tasks])
    if not tasks:
        print("no matching tasks")
        return 0
    print(table(("ID", "STATUS", "QUEUE", "KEY", "ATTEMPTS", "RUN AT (UTC)", "UPDATED (UTC)", "LAST ERROR"),
                [(task["id"], task["status"], task["queue"], task["key"], f"{task['attempts']}/{task['max_attempts']}",
                  _when(task["run_at"]), _when(task["updated_at"]), _first_line(task["last_error"]))
                 for task in tasks], right=(0,)))
    return 0


def show(runtime: Runtime, task_id: int, as_json: bool) -> int:
    ready(runtime)
    task = runtime.store.get(task_id)
    if task is None:
        raise TaskNotFound(f"no task with id {task_id}")
    logged, current = runtime.store.attempt_entries(task_id)
    history = timeline(task_id, logged, current) if current is not None else []
    if as_json:
        return _print_json({**_decoded(task), "attempt_log": [dataclasses.asdict(entry) for entry in history]})
    for column, value in task.items():
        if column == "last_error":
            continue
        if column == "attempts":
            value = f"{value} of {task['max_attempts']}"
        print(f"{column:>17}: {'' if value is None else printable(value)}")
    print("\n" + timeline_text(history))
    if task["last_error"]:
        print("\nlast error:\n" + printable(task["last_error"], multiline=True))
    return 0


def timeline_text(history: Sequence[Attempt]) -> str:
    """A task's attempts and operator actions as a table, oldest first (`gta show`)."""
    if not history:
        return "attempts: none yet"
    rows: list[Sequence[Any]] = []
    for entry in history:
        if entry.dropped_before:
            rows.append(("…", "", "", "", "", "", "", f"{entry.dropped_before} entries dropped (attempts_kept)"))
        took = entry.duration
        rows.append((entry.number, entry.outcome, _instant(entry.started_at), _instant(entry.ended_at),
                     "-" if took is None else f"{took:.3f}s", entry.worker or "-", entry.actor or "-",
                     _entry_detail(entry)))
    header = ("#", "OUTCOME", "LEASED (UTC)", "ENDED (UTC)", "TOOK", "WORKER", "BY", "ERROR / NEXT")
    return "attempts (errors with their tracebacks: --json):\n" + table(header, rows, right=(0, 4))


def _instant(moment: dt.datetime | None) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if moment else "-"


def _entry_detail(entry: Attempt) -> str:
    """The error's class and first line, then what followed: a retry after its delay, or the end."""
    parts = []
    if entry.exception_class_path:
        parts.append(f"{entry.exception_class_path}: {_first_line(entry.error, 80)}")
    elif entry.error and entry.outcome in (RELEASED, CANCELLED):
        parts.append(_first_line(entry.error, 80))
    if entry.retry_delay is not None:
        parts.append(f"retry in {entry.retry_delay:.3g}s")
    elif entry.exception_class_path:
        parts.append("no retry: failed")
    return "; ".join(parts) or "-"


def retry(runtime: Runtime, ids: Sequence[int], status: str | None, as_json: bool = False) -> int:
    """GTA's ForceRerunTasks: failed or cancelled tasks back to pending, attempts reset, due now."""
    ready(runtime)
    if status is not None:
        total = rerun_batches(runtime, ids_with_status(runtime, status), (status,), by=actor("cli"))
        if as_json:
            return _print_json({"status": status, "retried": total})
        print(f"retried {total} {status} task(s)")
        return 0
    was = rerun_tasks(runtime, ids, by=actor("cli"))
    if as_json:
        return _print_json([{"id": task_id, "retried": True, "was": was[task_id]} for task_id in ids])
    for task_id in ids:
        print(f"retried task {task_id} (was {printable(was[task_id])})")
    return 0


def cancel(runtime: Runtime, ids: Sequence[int], force: bool, as_json: bool = False) -> int:

    ready(runtime)
    require_tasks(runtime, ids)
    done = cancel_tasks(list(ids), force=force, by=actor("cli"))
    if as_json:
        return _print_json([{"id": task_id, "cancelled": task_id in done and done[task_id].cancelled,
                             "was": done[task_id].was if task_id in done else None} for task_id in ids])
    for task_id in ids:
        if task_id not in done:
            print(f"task {task_id} is gone: not cancelled")
        elif done[task_id].cancelled:
            print(f"cancelled task {task_id} (was {done[task_id].was})")
        else:
            print(f"task {task_id} had already {printable(_ended(done[task_id].was))}: not cancelled")
    return 0


def purge(runtime: Runtime, older_than: str, status: str | None, as_json: bool = False) -> int:
    age = duration("--older-than", older_than)
    ready(runtime)
    statuses = (status,) if status else FINAL_STATUSES
    total = purge_finished(runtime, age, statuses)
    if as_json:
        return _print_json({"deleted": total, "statuses": list(statuses), "older_than_seconds": age})
    print(f"deleted {total} {'/'.join(statuses)} task(s) finished more than {older_than.strip()} ago")
    return 0


def stats_text(runtime: Runtime, data: dict[str, Any] | None = None) -> str:
    """`stats_data` as a table, with a line for all queues when there is not exactly one."""
    data = stats_data(runtime) if data is None else data
    header = ("QUEUE", *(status.upper() for status in STATUSES), "OLDEST DUE", "SUCCEEDED/MIN")
    lines = data["queues"] + ([data["all"]] if len(data["queues"]) != 1 else [])
    rows = [[line["queue"], *(line[status] for status in STATUSES), format_duration(line["oldest_due_seconds"]),
             line["succeeded_last_minute"]] for line in lines]
    moment = dt.datetime.fromisoformat(data["time"])
    title = f"{data['table']} on {data['database']}, {moment:%Y-%m-%d %H:%M:%S} UTC"
    warnings = [f"\nwarning: {printable(Unhandled(group['key'], group['queue'], group['waiting'], None).describe())}"
                for group in data["unhandled"]]
    return f"{title}\n{table(header, rows, right=tuple(range(1, len(header))))}" + "".join(warnings)


def stats(runtime: Runtime, watch: bool, interval: str, out: TextIO = sys.stdout, as_json: bool = False) -> int:
    """With ``as_json`` one JSON object, or with ``watch`` one per line and interval (JSON lines)."""
    pause = duration("--interval", interval)
    if pause <= 0:
        raise GTAError("--interval: must be a duration > 0")
    ready(runtime)
    if not watch:
        print(_json(stats_data(runtime)) if as_json else stats_text(runtime), file=out)
        return 0
    try:
        while True:
            if as_json:
                out.write(json.dumps(stats_data(runtime), default=str) + "\n")
                out.flush()
                time.sleep(pause)
                continue
            frame = stats_text(runtime)
            # home, clear, frame: redrawn in place
            out.write(f"\x1b[H\x1b[2J{frame}\n\n(every {interval}; Ctrl-C to stop)\n")
            out.flush()
            time.sleep(pause)
    except KeyboardInterrupt:
        out.write("\n")
        out.flush()
        return 0


def handlers(runtime: Runtime, as_json: bool = False) -> int:
    registry = runtime.plugins.registry
    schedules = periodic_definitions(runtime.plugins)
    if as_json:
        return _print_json([_handler_data(registry, key, schedules) for key in sorted(registry.tasks)])
    for key in sorted(registry.tasks):
        definition = registry.tasks[key]
        options = [f"plugin {registry.owners[key]}", f"queue {definition.queue}",
                   f"max_attempts {definition.max_attempts}",
                   f"timeout {definition.timeout:g}" if definition.timeout else "timeout none"]
        if definition.priority:
            options.append(f"priority {definition.priority}")
        if definition.clean_succeeded:
            options.append("clean_succeeded")
        if definition.init_timeout_sensitive:
            options.append("init_timeout_sensitive")
        options += [_schedule(job) for job in schedules if job.key == key]
        marked = "async " if definition.is_async else ""
        print(printable(f"{marked}{key}{definition.signature}  [{'; '.join(options)}]"))
    return 0


def _handler_data(registry: Registry, key: str, schedules: Sequence[Periodic]) -> dict[str, Any]:
    definition = registry.tasks[key]
    return {
        "key": key, "signature": str(definition.signature), "async": definition.is_async,
        "plugin": registry.owners[key],
        "queue": definition.queue, "max_attempts": definition.max_attempts, "timeout": definition.timeout,
        "priority": definition.priority, "clean_succeeded": definition.clean_succeeded,
        "init_timeout_sensitive": definition.init_timeout_sensitive,
        "periodic": [{"name": job.name, "every": job.every, "cron": job.cron.expression if job.cron else None}
                     for job in schedules if job.key == key],
    }


def _schedule(job: Periodic) -> str:
    when = f"every {job.every:g}s" if job.every is not None else f"cron {job.cron.expression if job.cron else '?'}"
    return f"periodic {job.name} {when}"


def pause(runtime: Runtime, name: str, reason: str | None, as_json: bool) -> int:
    check_name(name)
    check_connection(runtime.db, runtime.settings.database_url)
    change = pause_queue(name, reason=reason, by=actor("cli"))
    if as_json:
        print(_json(dataclasses.asdict(change)))
        return 0
    queue = change.queue
    if not change.changed:
        print(f"queue {name!r} was already paused {_control(queue)}: nothing changed")
        return 0
    print(f"paused queue {name!r} ({_depth(queue)}): running tasks finish, no new one starts until "
          "`gta resume`; submitting still works")
    if not change.known:
        print(f"note: queue {name!r} is unknown here (no pending or running task, and no handler or queues "
              "setting names it); paused anyway: its tasks will wait once submitted")
    return 0


def resume(runtime: Runtime, name: str, as_json: bool) -> int:
    check_name(name)
    check_connection(runtime.db, runtime.settings.database_url)
    change = resume_queue(name, by=actor("cli"))
    if as_json:
        print(_json(dataclasses.asdict(change)))
    elif change.changed:
        print(f"resumed queue {name!r} ({_depth(change.queue)}); workers woken")
    else:
        print(f"queue {name!r} was not paused: nothing changed")
    return 0


def queue_list(runtime: Runtime, as_json: bool) -> int:
    ready(runtime)
    states = queues(runtime)
    if as_json:
        print(_json([dataclasses.asdict(state) for state in states]))
        return 0
    now = dt.datetime.now(dt.timezone.utc)
    print(table(("QUEUE", "STATE", "SINCE (UTC)", "BY", "PENDING", "RUNNING", "OLDEST DUE", "REASON"),
                [(state.name, "paused" if state.paused else "active", _when(state.since), state.by or "-",
                  state.pending, state.running,
                  format_duration((now - state.oldest_due).total_seconds() if state.oldest_due else None),
                  _first_line(state.reason) or "-") for state in states], right=(4, 5, 6)))
    return 0


def limit(runtime: Runtime, name: str, concurrency: str | None, rate: str | None, per_key: bool, clear: bool,
          as_json: bool) -> int:
    """``gta limit``: every value is checked (one line naming it, exit 2) before the database is touched."""
    check_name(name)
    if clear and (concurrency is not None or rate is not None or per_key):
        raise InvalidLimit("--clear takes no --concurrency, --rate or --per-key")
    if not clear and concurrency is None and rate is None:
        raise InvalidLimit("give --concurrency N and/or --rate N/UNIT, or --clear")
    if clear:
        ready(runtime)
        cleared = unlimit_queue(name, runtime=runtime)
        if as_json:
            return _print_json({"limit": None, "cleared": cleared})
        print(f"removed the limit of queue {name!r}" if cleared else f"queue {name!r} had no limit: nothing changed")
        return 0
    try:
        cap = None if concurrency is None else int(concurrency)
    except ValueError:
        raise InvalidLimit(f"concurrency {concurrency!r}: must be a positive int") from None
    check_queue_limit(name, cap, rate, per_key)
    ready(runtime)
    state = limit_queue(name, cap, rate, per_key=per_key, runtime=runtime)
    if as_json:
        return _print_json({"limit": dataclasses.asdict(state), "cleared": False})
    print(f"limited queue {name!r}: {printable(_limit_text(state))}; every worker obeys within a second")
    return 0


def limit_list(runtime: Runtime, as_json: bool) -> int:
    ready(runtime)
    states = limits(runtime)
    if as_json:
        return _print_json([dataclasses.asdict(state) for state in states])
    print(table(("KIND", "NAME", "CONCURRENCY", "PER KEY", "RATE", "WINDOW STARTS", "WINDOW (UTC)", "CHANGED (UTC)"),
                [(state.kind, state.name, state.concurrency or "-", "yes" if state.per_key else "no",
                  state.rate_limit or "-", state.window_count if state.rate_limit else "-",
                  _when(state.window_start), _when(state.changed_at)) for state in states], right=(2, 5)))
    return 0


def _limit_text(state: LimitState) -> str:
    parts = []
    if state.concurrency is not None:
        parts.append(f"at most {state.concurrency} running" + (" per concurrency key" if state.per_key else ""))
    if state.rate_limit is not None:
        parts.append(f"at most {state.rate_limit} starts")
    return ", ".join(parts)


def _depth(queue: QueueState) -> str:
    return f"{queue.pending} pending, {queue.running} running"


def _control(queue: QueueState) -> str:
    """since when, by whom, why"""
    why = f" ({_first_line(queue.reason)})" if queue.reason else ""
    return printable(f"since {_when(queue.since)} UTC by {queue.by or '?'}{why}")
