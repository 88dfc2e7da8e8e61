"""The admin command line ``gta`` (what its commands print is in `commands`; ``gta-supervisor``
is `supervisor_command`).

Errors are one line on stderr and a non-zero exit (2 for bad input or configuration, 1 when the
database cannot be reached or fails), never a traceback (`common.guard`).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence

from .. import admin
from .. import runtime as runtime_module
from ..admin import RETRYABLE, STATUSES
from ..config import add_setting_flags, parse_duration, positive_int, rule, settings_from_args
from ..db.connect import check_connection, describe_url, require_database_file
from ..errors import GTAError
from ..runtime import Runtime
from ..store.sql.statements import FINAL_STATUSES
from . import commands
from .common import OneLineParser, command_parser, fail, guard, merge_plugin_flags, project_importable

ADMIN_SETTINGS = ["database_url", "table", "plugins", "disable_plugins", "log_level"]
#: the commands that may create a SQLite database file (`handlers` opens none); the others refuse a missing one
CREATES_DATABASE = ("migrate", "demo", "handlers")


def _count(text: str) -> int:
    """A count option, checked while parsing by the settings' own rule (`config.positive_int`)."""
    try:
        return positive_int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(rule(exc)) from None


def _duration(text: str) -> str:
    """A duration option, checked while parsing (before any database is opened) and kept as
    typed: the command parses it again where it is used and quotes it back."""
    try:
        parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _task_id(text: str) -> int:
    """A task id argument: an integer the 64-bit id column can hold (drivers refuse others
    with errors of their own, SQLite's an OverflowError)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid task id {text!r}") from None
    if not 1 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"no task with id {value}")
    return value


def _add_global_options(parser: argparse.ArgumentParser, after_command: bool = False) -> None:
    """The database and plugin options, accepted before the command and after it. After it
    they default to absent (SUPPRESS) and lists go to ``*_after``, so that the command's
    parse, whose values argparse copies over the top-level ones, never undoes those."""
    default = argparse.SUPPRESS if after_command else None
    suffix = "_after" if after_command else ""
    add_setting_flags(parser, ADMIN_SETTINGS, default)
    parser.add_argument("--database", dest="database_url", default=default, help=argparse.SUPPRESS)
    parser.add_argument("--plugin", dest="plugin_list" + suffix, action="append", metavar="MODULE",
                        default=argparse.SUPPRESS if after_command else [], help="load a plugin module (repeatable)")
    parser.add_argument("--disable-plugin", dest="disabled_list" + suffix, action="append", metavar="NAME",
                        default=argparse.SUPPRESS if after_command else [],
                        help="disable a plugin by name (repeatable)")


def _admin_parser() -> argparse.ArgumentParser:
    parser = command_parser("gta", "Administer GTA tasks (same database settings as gta-supervisor). "
                            "The options below are accepted after the command too.")
    _add_global_options(parser)
    global_options = OneLineParser(add_help=False)
    _add_global_options(global_options, after_command=True)
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=OneLineParser)

    def command(name: str, help: str, description: str | None = None, json_help: str = "") -> argparse.ArgumentParser:
        """A command that takes the global options too, and ``--json`` when ``json_help`` says
        what its JSON holds."""
        parser = subcommands.add_parser(name, parents=[global_options], help=help, description=description or help)
        if json_help:
            parser.add_argument("--json", action="store_true", help=f"print JSON: {json_help}")
        return parser

    command("migrate", "create or upgrade the task table",
            "Create the task table, or upgrade it in place to this GTA's schema.",
            "table, database, version_before (null: created), version")

    submit = command("submit", "submit a task", "Submit one task; prints its id.", "{\"id\": ID}")
    submit.add_argument("key", help="the task's key (see gta handlers)")
    submit.add_argument("--args", default="{}", help="arguments as a JSON object (default {})")
    submit.add_argument("--delay", type=_duration, default=None, help="run after this long (e.g. 30s, 5m)")
    submit.add_argument("--queue", default=None, help="queue (default: the task's)")
    submit.add_argument("--priority", type=int, default=None, help="priority, higher first (default: the task's)")

    listing = command("list", "list tasks, newest first",
                      "List tasks, newest first, filtered by status, queue and key. The runs of the built-in "
                      "periodic tasks (gta_monitor, gta_cleanup) are left out unless --all or --key names one.",
                      "a list of tasks, every column; args and context as JSON values")
    listing.add_argument("--status", choices=STATUSES, default=None)
    listing.add_argument("--queue", default=None)
    listing.add_argument("--key", default=None)
    listing.add_argument("--limit", type=_count, default=50, help="most tasks shown (default 50)")
    listing.add_argument("--all", dest="everything", action="store_true",
                         help="also the built-in monitor and cleanup runs")

    show = command("show", "show one task and its attempts",
                   "Show one task: args, attempts, timestamps, its timeline of attempts and operator actions "
                   "(worker, start, duration, outcome, error, retry delay, who acted), last error with traceback.",
                   "every column; args and context as JSON values; attempt_log: [{task_id, number, outcome, "
                   "started_at, ended_at, worker, exception_class_path, error, traceback, retry_delay, actor, seq, "
                   "dropped_before}]")
    show.add_argument("id", type=_task_id)

    retry = command("retry", "run failed or cancelled tasks again",
                    "Put failed or cancelled tasks back to pending, due now, with their attempts reset "
                    "(GTA's ForceRerunTasks). Give ids, or --status for all tasks with that status.",
                    "with ids, [{id, retried, was}]; with --status, {status, retried: COUNT}")
    retry.add_argument("ids", type=_task_id, nargs="*", metavar="ID")
    retry.add_argument("--status", choices=RETRYABLE, default=None, help="retry every task with this status")

    cancel = command("cancel", "cancel tasks",
                     "Cancel pending or running tasks (a running handler sees ctx.cancelled).",
                     "[{id, cancelled, was}]")
    cancel.add_argument("ids", type=_task_id, nargs="+", metavar="ID")
    cancel.add_argument("--force", action="store_true", help="kill the worker process of a running task")

    purge = command("purge", "delete old finished tasks",
                    "Delete succeeded, failed and cancelled tasks that finished more than DURATION ago, in "
                    "batches. Pending and running tasks are never touched.",
                    "{deleted, statuses, older_than_seconds}")
    purge.add_argument("--older-than", type=_duration, required=True, metavar="DURATION", help="e.g. 30s, 5m, 7d")
    purge.add_argument("--status", choices=FINAL_STATUSES, default=None, help="only tasks with this status")

    stats = command("stats", "counts by queue and status, oldest due task, throughput",
                    "Tasks by queue and status, the age of the oldest due pending task, and tasks succeeded "
                    "in the last minute; a warning for each task key and queue whose due tasks no live "
                    "supervisor handles.",
                    "{table, database, time, queues: [{queue, <status>: COUNT, oldest_due_seconds, "
                    "succeeded_last_minute}], all: {...}, unhandled: [{key, queue, waiting, oldest_due}]}; "
                    "with --watch one object per line and interval")
    stats.add_argument("--watch", action="store_true", help="redraw in place until Ctrl-C")
    stats.add_argument("--interval", type=_duration, default="2s", help="redraw period with --watch (default 2s)")

    pause = command("pause", "pause a queue on every supervisor",
                    "Pause a queue cluster-wide: no worker of any supervisor sharing the database starts a new "
                    "task of it (tasks already running finish); submitting still works and the tasks wait. "
                    "A queue that nothing names yet can be paused too.",
                    "{queue: {name, paused, since, by, reason, depth…}, changed, known}")
    pause.add_argument("queue", metavar="QUEUE")
    pause.add_argument("--reason", default=None, metavar="TEXT", help="why, shown by gta queues")
    resume = command("resume", "resume a paused queue", "Resume a paused queue; the workers are woken at once.",
                     "{queue: {name, paused, since, by, reason, depth…}, changed, known}")
    resume.add_argument("queue", metavar="QUEUE")
    command("queues", "queues: paused or not, since when, by whom, why, depth",
            "Each queue with pending or running tasks, served by these settings, or ever paused: paused or "
            "active, since when, by whom and why, its pending and running tasks, and its oldest due task's wait.",
            "[{name, paused, since, by, reason, depth…}]")

    limit = command("limit", "limit a queue's concurrency and rate on every supervisor",
                    "Limit a queue cluster-wide: at most N of its tasks running at once (per concurrency key "
                    "with --per-key) and at most a rate of starts per fixed window (100/s, 100/m, 100/h). "
                    "Replaces the queue's limit; --clear removes it. Binds every worker within a second.",
                    "{limit: {kind, name, concurrency, rate_limit, per_key, window_start, window_count, "
                    "changed_at} or null, cleared}")
    limit.add_argument("queue", metavar="QUEUE")
    # not ``concurrency``: that is a setting's name (async tasks per worker), read from args too
    limit.add_argument("--concurrency", dest="limit_concurrency", default=None, metavar="N",
                       help="most tasks running at once")
    limit.add_argument("--rate", dest="limit_rate", default=None, metavar="N/UNIT",
                       help="most starts per s, m or h, e.g. 100/m")
    limit.add_argument("--per-key", action="store_true", help="the concurrency is per concurrency key")
    limit.add_argument("--clear", action="store_true", help="remove the queue's limit")
    command("limits", "global limits: task and queue concurrency and rates",
            "Every limit: task limits (written by supervisors from @task) and queue limits (gta limit), "
            "with the current rate window.",
            "[{kind, name, concurrency, rate_limit, per_key, window_start, window_count, changed_at}]")

    command("handlers", "list every discovered task",
            "Every task the plugins provide, with its plugin, options, signature and schedule; "
            "async def handlers are marked async.",
            "[{key, signature, async, plugin, queue, max_attempts, timeout, priority, clean_succeeded, "
            "init_timeout_sensitive, periodic: [{name, every, cron}]}]")
    demo = command("demo", "submit demo tasks, run them, print what became of each")
    demo.add_argument("--timeout", type=_duration, default="60s", help="give up after this long (default 60s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _admin_parser().parse_args(argv)
    merge_plugin_flags(args)
    project_importable()
    if args.command == "retry" and bool(args.ids) == (args.status is not None):
        return fail("gta retry", "give task ids or --status, not both and not neither (see gta retry --help)")

    def run() -> int:
        settings = settings_from_args(args)
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
        runtime = runtime_module.configure(settings)
        runtime.plugins  # noqa: B018 - a plugin that cannot load (or a name to disable that none has) is said now
        if args.command not in CREATES_DATABASE:
            require_database_file(settings.database_url)
        return COMMANDS[args.command](runtime, args)

    return guard("gta", run)


def cmd_migrate(runtime: Runtime, args: argparse.Namespace) -> int:
    check_connection(runtime.db, runtime.settings.database_url)
    problems = runtime.store.schema_problems()
    before, after = runtime.store.migrate()
    if args.json:
        print(json.dumps({"table": runtime.settings.table, "database": describe_url(runtime.settings.database_url),
                          "version_before": before, "version": after}))
        return 0
    where = f"{runtime.settings.table} on {describe_url(runtime.settings.database_url)}"
    table = runtime.settings.table
    if problems == [f"table {table}_schema is missing", f"table {table} is missing"]:
        print(f"created {where} at schema version {after}")
        return 0
    for problem in problems:  # each was created by migrate, or it raised
        print(f"repaired {where}: {problem}")
    print(f"upgraded {where} from schema version {before} to {after}" if before not in (None, after)
          else f"{where} is at schema version {after}")
    return 0


def cmd_submit(runtime: Runtime, args: argparse.Namespace) -> int:
    from ..submit import OWN_TRANSACTION, submit
    try:
        task_args = json.loads(args.args)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply to decode
        raise GTAError(f"--args is not valid JSON: {exc}") from None
    delay = commands.duration("--delay", args.delay) if args.delay is not None else None
    admin.ready(runtime)
    task_id = submit(OWN_TRANSACTION, args.key, task_args, delay=delay, queue=args.queue, priority=args.priority)
    print(json.dumps({"id": task_id}) if args.json else task_id)
    return 0


def cmd_demo(runtime: Runtime, args: argparse.Namespace) -> int:
    from .demo_run import run_demo
    return run_demo(runtime, commands.duration("--timeout", args.timeout))


COMMANDS: dict[str, Callable[[Runtime, argparse.Namespace], int]] = {
    "migrate": cmd_migrate,
    "submit": cmd_submit,
    "list": lambda runtime, a: commands.list_tasks(runtime, a.status, a.queue, a.key, a.limit, a.json, a.everything),
    "show": lambda runtime, a: commands.show(runtime, a.id, a.json),
    "retry": lambda runtime, a: commands.retry(runtime, a.ids, a.status, a.json),
    "cancel": lambda runtime, a: commands.cancel(runtime, a.ids, a.force, a.json),
    "purge": lambda runtime, a: commands.purge(runtime, a.older_than, a.status, a.json),
    "stats": lambda runtime, a: commands.stats(runtime, a.watch, a.interval, as_json=a.json),
    "handlers": lambda runtime, a: commands.handlers(runtime, a.json),
    "pause": lambda runtime, a: commands.pause(runtime, a.queue, a.reason, a.json),
    "resume": lambda runtime, a: commands.resume(runtime, a.queue, a.json),
    "queues": lambda runtime, a: commands.queue_list(runtime, a.json),
    "limit": lambda runtime, a: commands.limit(runtime, a.queue, a.limit_concurrency, a.limit_rate, a.per_key, a.clear,
                                              a.json),
    "limits": lambda runtime, a: commands.limit_list(runtime, a.json),
    "demo": cmd_demo,
}
