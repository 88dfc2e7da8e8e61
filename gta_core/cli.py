"""Command lines: ``gta-supervisor`` and the admin ``gta``.

Errors are one line on stderr and a non-zero exit (2 for bad input or configuration),
never a traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

import peewee

from . import runtime as runtime_module
from .config import SETTINGS, add_setting_flags, parse_duration, settings_from_args
from .database import check_connection, describe_url
from .errors import GTAError, TaskNotFound
from .runtime import Runtime

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
        settings = settings_from_args(args)
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
def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser("gta", "Administer GTA tasks.")
    add_setting_flags(parser, ADMIN_SETTINGS)
    parser.add_argument("--database", dest="database_url", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--plugin", dest="plugin_list", action="append", default=[], metavar="MODULE",
                        help="load a plugin module (repeatable)")
    parser.add_argument("--disable-plugin", dest="disabled_list", action="append", default=[], metavar="NAME",
                        help="disable a plugin by name (repeatable)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    commands.add_parser("migrate", help="create or upgrade the task table")
    submit = commands.add_parser("submit", help="submit a task")
    submit.add_argument("key")
    submit.add_argument("--args", default="{}", help="arguments as a JSON object")
    submit.add_argument("--delay", default=None, help="run after this long (e.g. 30s, 5m)")
    submit.add_argument("--queue", default=None)
    submit.add_argument("--priority", type=int, default=None)
    show = commands.add_parser("show", help="show one task")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true", help="print JSON")
    commands.add_parser("handlers", help="list every discovered task")
    demo = commands.add_parser("demo", help="submit demo tasks, run them, print what became of each")
    demo.add_argument("--timeout", default="60s", help="give up after this long (default 60s)")
    args = parser.parse_args(argv)
    _merge_plugin_flags(args)

    def run() -> int:
        settings = settings_from_args(args)
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
        runtime = runtime_module.configure(settings)
        return COMMANDS[args.command](runtime, args)

    return _guard("gta", run)


def _connect(runtime: Runtime) -> None:
    check_connection(runtime.db, runtime.settings.database_url)


def cmd_migrate(runtime: Runtime, args: argparse.Namespace) -> int:
    _connect(runtime)
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
    except ValueError as exc:
        raise GTAError(f"--args is not valid JSON: {exc}") from None
    try:
        delay = parse_duration(args.delay) if args.delay is not None else None
    except ValueError as exc:
        raise GTAError(f"--delay: {exc}") from None
    _connect(runtime)
    runtime.store.require_schema()
    task_id = submit(None, args.key, task_args, delay=delay, queue=args.queue, priority=args.priority)
    print(task_id)
    return 0


def cmd_show(runtime: Runtime, args: argparse.Namespace) -> int:
    _connect(runtime)
    runtime.store.require_schema()
    task = runtime.store.get(args.id)
    if task is None:
        raise TaskNotFound(f"no task with id {args.id}")
    if args.json:
        print(json.dumps(task, default=str, indent=2))
        return 0
    for column, value in task.items():
        if column != "last_error":
            print(f"{column:>17}: {'' if value is None else value}")
    if task["last_error"]:
        print("\nlast error:\n" + task["last_error"])
    return 0


def cmd_handlers(runtime: Runtime, args: argparse.Namespace) -> int:
    registry = runtime.plugins.registry
    for key in sorted(registry.tasks):
        definition = registry.tasks[key]
        print(f"{key}{definition.signature}  [plugin {registry.owners[key]}; queue {definition.queue}; "
              f"max_attempts {definition.max_attempts}; timeout {definition.timeout or 'none'}]")
    return 0


def cmd_demo(runtime: Runtime, args: argparse.Namespace) -> int:
    from .demo import run_demo
    try:
        timeout = parse_duration(args.timeout)
    except ValueError as exc:
        raise GTAError(f"--timeout: {exc}") from None
    return run_demo(runtime, timeout)


COMMANDS: dict[str, Callable[[Runtime, argparse.Namespace], int]] = {
    "migrate": cmd_migrate, "submit": cmd_submit, "show": cmd_show, "handlers": cmd_handlers, "demo": cmd_demo,
}


