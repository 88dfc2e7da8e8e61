"""The sidecar and its dashboard attacked as in issue 36, one test per finding, over real HTTP
(raw sockets where the request must be malformed) against a live supervisor's sidecar; the
server's own bounds also in process, with short timeouts. The browser halves of findings 1
and 2 are in test_dashboard_browser.py; 10 in test_config_cli.py; 11 in test_admin_cli.py.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import gta_core
from gta_core.errors import InvalidArguments

from .helpers import Env

SQLITE = pytest.mark.parametrize("backend", ["sqlite"])  # HTTP is the subject: one database is enough


# -- 9. argument size and depth -----------------------------------------------------------------------
def _nested(depth: int) -> dict[str, object]:
    value: dict[str, object] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@SQLITE
def test_arguments_too_deep_or_too_big_are_refused_and_nothing_is_written(env: Env) -> None:
    before = env.store.counts()
    gta_core.submit(gta_core.OWN_TRANSACTION, "greet", {"name": "ok", "punctuation": str(_nested(32))})
    with pytest.raises(InvalidArguments, match="args_max_depth"):
        gta_core.submit(gta_core.OWN_TRANSACTION, "greet", {"name": _nested(32)})  # 33 levels with the args
    with pytest.raises(InvalidArguments, match="args_max_depth"):
        gta_core.submit(gta_core.OWN_TRANSACTION, "greet", {"name": "x"}, context={"deep": _nested(40)})
    with pytest.raises(InvalidArguments, match=r"1,048,576 \(setting args_max_bytes"):
        gta_core.submit(gta_core.OWN_TRANSACTION, "greet", {"name": "x" * 1_048_576})
    assert sum(env.store.counts().values()) == sum(before.values()) + 1  # only the first was written
    refused = subprocess.run([sys.executable, "-c", "import sys; from gta_core.cli import main; sys.exit(main())",
                              "submit", "greet", "--args", '{"name": "' + "x" * 200 + '"}'],
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, "GTA_ARGS_MAX_BYTES": "100"})
    assert refused.returncode == 2 and "args_max_bytes" in refused.stderr and len(refused.stderr.splitlines()) == 1
