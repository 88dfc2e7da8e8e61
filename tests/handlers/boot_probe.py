"""Plugin ``tests.handlers.boot_probe``: on import, before the process runs any task, writes what
it found of prometheus_client to the ledger (phase ``boot``). Workers import their plugins after
they are forked, so this tells what a worker starts with."""
from __future__ import annotations

import os
import sys

from .tasks import append_record

_client = sys.modules.get("prometheus_client.values")
_path = os.environ.get("GTA_TEST_LEDGER")
if _path:
    append_record(_path, {"id": None, "phase": "boot", "pid": os.getpid(), "prometheus_client": _client is not None,
                          "multiprocess": bool(getattr(getattr(_client, "ValueClass", None), "_multiprocess", False))})
