"""What both command lines share: the one-line parser, the error guard, the project path, the plugin flags.

Errors are one line on stderr and a non-zero exit (2 for bad input or configuration, 1 when the
database cannot be reached or fails), never a traceback. Nothing here imports peewee: the
supervisor's command learns its database before peewee is imported (`gta_core.db.drivers`).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from .. import __version__
from ..errors import DatabaseUnavailable, GTAError
from .terminal import printable

EXIT_USAGE = 2  # bad input or configuration
EXIT_DATABASE = 1  # the database cannot be reached or failed


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (``--help`` still shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def command_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = OneLineParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def project_importable() -> None:
    """Make the working directory importable, as Celery's and gunicorn's commands do: ``gta-supervisor
    --plugin myapp.tasks`` (or ``GTA_PLUGINS``) run from the project's directory finds ``myapp``.
    A console script's path starts at its bin directory, not there. Appended, not put first:
    an installed package (GTA itself, run from its checkout) wins over a folder of the same name,
    and the spawned workers inherit the path."""
    here = os.getcwd()
    if "" not in sys.path and here not in sys.path:
        sys.path.append(here)


def fail(prog: str, message: str, code: int = EXIT_USAGE) -> int:
    print(f"{prog}: error: {printable(message)}", file=sys.stderr)
    return code


def guard(prog: str, action: Callable[[], int]) -> int:
    """Run a command: its errors become one line and an exit code (2: usage or configuration,
    1: the database failed); a reader that closed our stdout (``gta show 1 | head``) ends it
    quietly."""
    try:
        code = action()
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return code
    except DatabaseUnavailable as exc:
        return fail(prog, str(exc), EXIT_DATABASE)
    except GTAError as exc:
        return fail(prog, str(exc))
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if not _is_database_error(exc):
            raise
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        return fail(prog, f"database error: {text}", EXIT_DATABASE)


def _is_database_error(exc: Exception) -> bool:
    """A peewee error (the driver's, wrapped): if peewee was never imported, none was raised."""
    peewee = sys.modules.get("peewee")
    return peewee is not None and isinstance(exc, (peewee.DatabaseError, peewee.InterfaceError))


def _silence_stdout() -> None:
    """After EPIPE: point stdout at /dev/null, so the interpreter's final flush of what is still
    buffered does not fail again (and print "Exception ignored ... BrokenPipeError")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def merge_plugin_flags(args: argparse.Namespace) -> None:
    """``--plugin``/``--disable-plugin`` (before and after a command) join GTA_PLUGINS' list."""
    plugins = [*args.plugin_list, *getattr(args, "plugin_list_after", [])]
    disabled = [*args.disabled_list, *getattr(args, "disabled_list_after", [])]
    if plugins:
        args.plugins = ",".join(filter(None, [args.plugins, *plugins]))
    if disabled:
        args.disable_plugins = ",".join(filter(None, [args.disable_plugins, *disabled]))
