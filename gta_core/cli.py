"""Command lines: ``gta-supervisor`` and the admin ``gta`` (what its commands do is in `admin`).

Errors are one line on stderr and a non-zero exit (2 for bad input or configuration, 1 for a
database error), never a traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

import peewee

from . import admin
from . import runtime as runtime_module
from .admin import RETRYABLE, STATUSES
from .config import SETTINGS, add_setting_flags, settings_from_args
from .database import check_connection, describe_url
from .errors import GTAError
from .runtime import Runtime
from .sql import FINAL_STATUSES

EXIT_USAGE = 2
SUPERVISOR_SETTINGS = [setting.name for setting in SETTINGS]
ADMIN_SETTINGS = ["database_url", "table", "plugins", "disable_plugins", "log_level"]


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (``--help`` still shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    return _Parser(prog=prog, description=description)


def _fail(prog: str, message: str, code: int = EXIT_USAGE) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def _guard(prog: str, action: Callable[[], int]) -> int:
    try:
        return action()
    except GTAError as exc:
        return _fail(prog, str(exc))
    except (peewee.DatabaseError, peewee.InterfaceError) as exc:
        return _fail(prog, f"database error: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}", 1)
    except KeyboardInterrupt:
        return 130


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s [supervisor] %(name)s: %(message)s")


# -- gta-supervisor ----------------------------------------------------------------------------
def supervisor_main(argv: Sequence[str] | None = None) -> int:
    parser = _parser("gta-supervisor", "Run worker processes that execute GTA tasks.")
    add_setting_flags(parser, SUPERVISOR_SETTINGS)
    parser.add_argument("--database", dest="database_url", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--plugin", dest="plugin_list", action="append", default=[], metavar="MODULE",
                        help="load a plugin module (repeatable; also GTA_PLUGINS)")
    parser.add_argument("--disable-plugin", dest="disabled_list", action="append", default=[], metavar="NAME",
                        help="disable a plugin by name (repeatable; also GTA_DISABLE_PLUGINS)")
    args = parser.parse_args(argv)
    _merge_plugin_flags(args)

    def run() -> int:
        from .dashboard import prepare
        settings = prepare(settings_from_args(args))
        _setup_logging(settings.log_level)
        from .supervisor import run_supervisor
        return run_supervisor(runtime_module.configure(settings))

    return _guard("gta-supervisor", run)


def _merge_plugin_flags(args: argparse.Namespace) -> None:
    if args.plugin_list:
        args.plugins = ",".join(filter(None, [args.plugins, *args.plugin_list]))
    if args.disabled_list:
        args.disable_plugins = ",".join(filter(None, [args.disable_plugins, *args.disabled_list]))


# -- gta -----------------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if not 1 <= value < 2**63:  # a database integer (SQLite's driver raises OverflowError beyond)
        raise argparse.ArgumentTypeError(f"must be from 1 to 2**63 - 1, not {value}")
    return value


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


def _admin_parser() -> argparse.ArgumentParser:
    parser = _parser("gta", "Administer GTA tasks (same database settings as gta-supervisor).")
    add_setting_flags(parser, ADMIN_SETTINGS)
    parser.add_argument("--database", dest="database_url", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--plugin", dest="plugin_list", action="append", default=[], metavar="MODULE",
                        help="load a plugin module (repeatable)")
    parser.add_argument("--disable-plugin", dest="disabled_list", action="append", default=[], metavar="NAME",
                        help="disable a plugin by name (repeatable)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    commands.add_parser("migrate", help="create or upgrade the task table",
                        description="Create the task table, or upgrade it in place to this GTA's schema.")

    submit = commands.add_parser("submit", help="submit a task", description="Submit one task; prints its id.")
    submit.add_argument("key", help="the task's key (see gta handlers)")
    submit.add_argument("--args", default="{}", help="arguments as a JSON object (default {})")
    submit.add_argument("--delay", default=None, help="run after this long (e.g. 30s, 5m)")
    submit.add_argument("--queue", default=None, help="queue (default: the task's)")
    submit.add_argument("--priority", type=int, default=None, help="priority, higher first (default: the task's)")

    listing = commands.add_parser("list", help="list tasks, newest first",
                                  description="List tasks, newest first, filtered by status, queue and key.")
    listing.add_argument("--status", choices=STATUSES, default=None)
    listing.add_argument("--queue", default=None)
    listing.add_argument("--key", default=None)
    listing.add_argument("--limit", type=_positive_int, default=50, help="most tasks shown (default 50)")
    listing.add_argument("--json", action="store_true", help="print JSON")

    show = commands.add_parser("show", help="show one task",
                               description="Show one task: args, attempts, timestamps, last error with traceback.")
    show.add_argument("id", type=_task_id)
    show.add_argument("--json", action="store_true", help="print JSON")

    retry = commands.add_parser(
        "retry", help="run failed or cancelled tasks again",
        description="Put failed or cancelled tasks back to pending, due now, with their attempts reset "
                    "(GTA's ForceRerunTasks). Give ids, or --status for all tasks with that status.")
    retry.add_argument("ids", type=_task_id, nargs="*", metavar="ID")
    retry.add_argument("--status", choices=RETRYABLE, default=None, help="retry every task with this status")

    cancel = commands.add_parser("cancel", help="cancel tasks",
                                 description="Cancel pending or running tasks (a running handler sees ctx.cancelled).")
    cancel.add_argument("ids", type=_task_id, nargs="+", metavar="ID")
    cancel.add_argument("--force", action="store_true", help="kill the worker process of a running task")

    purge = commands.add_parser("purge", help="delete old finished tasks",
                                description="Delete succeeded, failed and cancelled tasks that finished more than "
                                            "DURATION ago, in batches. Pending and running tasks are never touched.")
    purge.add_argument("--older-than", required=True, metavar="DURATION", help="e.g. 30s, 5m, 7d")
    purge.add_argument("--status", choices=FINAL_STATUSES, default=None, help="only tasks with this status")

    stats = commands.add_parser("stats", help="counts by queue and status, oldest due task, throughput",
                                description="Tasks by queue and status, the age of the oldest due pending task, "
                                            "and tasks succeeded in the last minute.")
    stats.add_argument("--watch", action="store_true", help="redraw in place until Ctrl-C")
    stats.add_argument("--interval", default="2s", help="redraw period with --watch (default 2s)")

    commands.add_parser("handlers", help="list every discovered task",
                        description="Every task the plugins provide, with its plugin, options, signature and schedule.")
    demo = commands.add_parser("demo", help="submit demo tasks, run them, print what became of each")
    demo.add_argument("--timeout", default="60s", help="give up after this long (default 60s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _admin_parser().parse_args(argv)
    _merge_plugin_flags(args)
    if args.command == "retry" and bool(args.ids) == (args.status is not None):
        return _fail("gta retry", "give task ids or --status, not both and not neither (see gta retry --help)")

    def run() -> int:
        settings = settings_from_args(args)
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
        runtime = runtime_module.configure(settings)
        return COMMANDS[args.command](runtime, args)

    return _guard("gta", run)


def cmd_migrate(runtime: Runtime, args: argparse.Namespace) -> int:
    check_connection(runtime.db, runtime.settings.database_url)
    before, after = runtime.store.migrate()
    where = f"{runtime.settings.table} on {describe_url(runtime.settings.database_url)}"
    print(f"created {where} at schema version {after}" if before is None
          else f"{where} is at schema version {after}" if before == after
          else f"upgraded {where} from schema version {before} to {after}")
    return 0


def cmd_submit(runtime: Runtime, args: argparse.Namespace) -> int:
    from .submit import submit
    try:
        task_args = json.loads(args.args)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply to decode
        raise GTAError(f"--args is not valid JSON: {exc}") from None
    delay = admin.duration("--delay", args.delay) if args.delay is not None else None
    admin.ready(runtime)
    task_id = submit(None, args.key, task_args, delay=delay, queue=args.queue, priority=args.priority)
    print(task_id)
    return 0


def cmd_demo(runtime: Runtime, args: argparse.Namespace) -> int:
    from .demo import run_demo
    return run_demo(runtime, admin.duration("--timeout", args.timeout))


COMMANDS: dict[str, Callable[[Runtime, argparse.Namespace], int]] = {
    "migrate": cmd_migrate,
    "submit": cmd_submit,
    "list": lambda runtime, a: admin.list_tasks(runtime, a.status, a.queue, a.key, a.limit, a.json),
    "show": lambda runtime, a: admin.show(runtime, a.id, a.json),
    "retry": lambda runtime, a: admin.retry(runtime, a.ids, a.status),
    "cancel": lambda runtime, a: admin.cancel(runtime, a.ids, a.force),
    "purge": lambda runtime, a: admin.purge(runtime, a.older_than, a.status),
    "stats": lambda runtime, a: admin.stats(runtime, a.watch, a.interval),
    "handlers": lambda runtime, a: admin.handlers(runtime),
    "demo": cmd_demo,
}
