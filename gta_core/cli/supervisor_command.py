"""The ``gta-supervisor`` command line.

It imports little before it knows its database: the settings come from the flags and the
environment, then peewee is imported with that database's driver alone (`gta_core.db.drivers`,
some 100 ms less where every driver is installed) and the fork server that will start the
workers begins importing their code (`gta_core.supervisor.launcher`) while this process loads
the supervisor's, checks the plugins and opens its connection. Each worker re-imports this
module as its ``__mp_main__`` (the console script's main module), so it stays small.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..config import SETTINGS, add_setting_flags, dialect_of_url, settings_from_args
from ..db import drivers
from .common import command_parser, guard, merge_plugin_flags, project_importable


def supervisor_main(argv: Sequence[str] | None = None) -> int:
    parser = command_parser("gta-supervisor", "Run worker processes that execute GTA tasks.")
    add_setting_flags(parser, [setting.name for setting in SETTINGS])
    parser.add_argument("--database", dest="database_url", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--plugin", dest="plugin_list", action="append", default=[], metavar="MODULE",
                        help="load a plugin module (repeatable; also GTA_PLUGINS)")
    parser.add_argument("--disable-plugin", dest="disabled_list", action="append", default=[], metavar="NAME",
                        help="disable a plugin by name (repeatable; also GTA_DISABLE_PLUGINS)")
    args = parser.parse_args(argv)
    merge_plugin_flags(args)
    project_importable()

    def run() -> int:
        settings = settings_from_args(args)
        dialect = dialect_of_url(settings.database_url)
        from ..metrics.multiproc import MultiprocDir
        from ..supervisor.launcher import worker_context
        # the metrics directory first: the fork server imports prometheus_client in its mode
        metrics_directory = MultiprocDir.create() if settings.metrics else None
        try:
            # the fork server imports the workers' code from now on
            worker_context(dialect, metrics_directory)
            drivers.require_driver(dialect)  # one line naming the extra to install, not a traceback
            drivers.import_peewee_for(dialect)  # before anything else imports peewee with every driver
            from .. import runtime as runtime_module
            from ..dashboard.access import prepare
            settings = prepare(settings)
            logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                                format="%(asctime)s %(levelname)s [supervisor] %(name)s: %(message)s")
            from ..supervisor.manager import run_supervisor
            return run_supervisor(runtime_module.configure(settings), metrics_directory=metrics_directory)
        finally:
            if metrics_directory is not None:  # the supervisor removed it, unless it never started
                metrics_directory.remove()

    return guard("gta-supervisor", run)
