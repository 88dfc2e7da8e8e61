"""``python -m gta_core.cli_supervisor``: the same as the ``gta-supervisor`` command."""
from __future__ import annotations

import sys

from .cli.supervisor_command import supervisor_main

if __name__ == "__main__":
    sys.exit(supervisor_main())
