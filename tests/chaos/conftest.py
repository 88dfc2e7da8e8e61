"""The ``chaos`` fixture (a `ChaosHarness` on a table of its own, per backend) and the counters.

pytest hides a passing test's output, so each scenario's counter line is collected in
`harness.REPORTS` and printed in the terminal summary, where CI logs show it.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import REPORTS, ChaosHarness, new_table
from .servers import private_servers  # noqa: F401 - session fixture of the database-fault scenarios


@pytest.fixture
def chaos(backend: str, db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ChaosHarness]:
    """A harness on a fresh table of ``db_url``; killed, stopped and dropped afterwards.

    ``@pytest.mark.chaos(lease_timeout=4, threads=2, ...)`` on a test passes harness options.
    """
    marker = request.node.get_closest_marker("chaos")
    harness = ChaosHarness(db_url, new_table(), tmp_path, backend=backend, **(marker.kwargs if marker else {}))
    try:
        yield harness
    finally:
        harness.close(drop=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORTS:
        terminalreporter.section("chaos counters")
        for line in REPORTS:
            terminalreporter.write_line(line)
