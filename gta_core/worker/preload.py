"""What the supervisor's fork server imports before it forks workers (`gta_core.supervisor.launcher`).

Importing this module in the fork server loads the worker's code, and peewee with the one
driver its database needs (``GTA_DRIVER_DIALECT``, consumed by `gta_core.db.drivers` on the
first import of `gta_core`), so that each forked worker starts with them in memory. Only in
the fork server (``GTA_FORK_SERVER`` in its environment) does it also make that process ignore
SIGTERM: the server's life is tied to the supervisor's by a pipe, and a stop sent to the whole
process group must not take it down while the workers, whose exit codes it reports to the
supervisor, still finish their tasks; and, where the supervisor exports metrics, it imports
prometheus_client (a worker's first task otherwise waited 25-45 ms for it, on its first
metrics event), after the supervisor made its multiprocess directory, since prometheus_client
chooses its mode on import. Imported anywhere else, it only imports.
"""
from __future__ import annotations

import os
import signal

from . import process  # noqa: F401 - the point of this module: the worker's code, imported once
from .channel import FORK_SERVER_ENV

if os.environ.pop(FORK_SERVER_ENV, None) == "1":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # the supervisor's metrics directory (prometheus_client's name)
        import prometheus_client  # noqa: F401 - in multiprocess mode, which it fixes on import
