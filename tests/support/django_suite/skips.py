"""Django's tests/tasks tests that GTABackend does not run, each for a behaviour only Django's
dummy or immediate backend has (imported by the runner and by `tests.process.test_django6`, which
checks that exactly these were skipped)."""
from __future__ import annotations

_IN_MEMORY = "the dummy backend keeps its results in memory, where a test can change them behind its back"
_IMMEDIATE = "the immediate backend runs the task at once in the caller's process"
#: Django's tests of a behaviour only its dummy or immediate backend has, and why each is skipped
SKIPPED = {
    "DummyBackendTestCase.test_refresh_result": _IN_MEMORY,
    "DummyBackendTestCase.test_refresh_result_async": _IN_MEMORY,
    "TaskTestCase.test_refresh_result": "calls the synchronous refresh() in async code, which only a backend "
                                        "without a database (the dummy's memory) allows: Django refuses "
                                        "database access there",
    "ImmediateBackendTestCase.test_cannot_get_result": "the immediate backend cannot read results (GTABackend can)",
    "ImmediateBackendTestCase.test_cannot_refresh_result": "the immediate backend cannot read results "
                                                           "(GTABackend can)",
    "ImmediateBackendTestCase.test_cannot_pass_run_after": "the immediate backend cannot defer a task "
                                                           "(GTABackend takes run_after)",
    "ImmediateBackendTestCase.test_throws_keyboard_interrupt": f"{_IMMEDIATE}, so a KeyboardInterrupt reaches "
                                                               "the caller",
    "ImmediateBackendTransactionTestCase.test_doesnt_wait_until_transaction_commit_by_default":
        f"{_IMMEDIATE}, inside its transaction (GTA runs it once the transaction commits)",
}
