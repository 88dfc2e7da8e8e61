"""The outcome rule (`gta_core.outcomes`): one case per row of its table.

The tests build a real pluggy manager with a recording retry policy; rescue through the rule in
a real supervisor, on each database, is tests/process/test_outcomes.py.
"""
from __future__ import annotations

from typing import Any

import pluggy
import pytest

from gta_core import hookimpl, hookspecs
from gta_core.errors import Fail, InvalidArguments, LeaseExpired, Retry, TaskTimeout, UnknownTask, WorkerDied
from gta_core.outcomes import Action, Outcome, decide
from gta_core.plugins import Plugins, Registry
from gta_core.runtime import get_runtime
from gta_core.tasks import TaskRecord


class Policy:
    """A retry policy that answers ``delay`` and records what it was asked."""

    def __init__(self, delay: float | None) -> None:
        self.delay = delay
        self.asked: list[tuple[int, BaseException]] = []

    @hookimpl
    def gta_retry_delay(self, task: Any, error: BaseException) -> float | None:
        self.asked.append((task.attempts, error))
        return self.delay


def plugins_with(policy: Any) -> Plugins:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    manager.register(policy)
    return Plugins(manager, Registry({}, {}), get_runtime())


def task(attempts: int = 1, max_attempts: int = 3) -> TaskRecord:
    return TaskRecord(7, "record", "default", "{}", None, attempts, max_attempts)


def test_a_return_succeeds_without_asking_the_policy() -> None:
    policy = Policy(5.0)
    assert decide(plugins_with(policy), task(), None) == Outcome(Action.SUCCEED)
    assert policy.asked == []


@pytest.mark.parametrize("error", [Fail("no"), UnknownTask("gone"), InvalidArguments("bad")])
def test_hopeless_errors_fail_at_once(error: BaseException) -> None:
    policy = Policy(5.0)
    outcome = decide(plugins_with(policy), task(attempts=1), error)
    assert (outcome.action, outcome.error, outcome.event) == (Action.FAIL, error, "failed")
    assert policy.asked == [], "retrying cannot help: the policy is not asked"
    assert type(error).__name__ in outcome.error_text


def test_retry_uses_the_handlers_delay_until_the_attempts_are_used_up() -> None:
    policy = Policy(99.0)
    error = Retry(4.5)
    assert decide(plugins_with(policy), task(attempts=2, max_attempts=3), error) == \
        Outcome(Action.RETRY, delay=4.5, error=error)
    last = decide(plugins_with(policy), task(attempts=3, max_attempts=3), error)
    assert (last.action, last.error) == (Action.FAIL, error)
    assert policy.asked == []


@pytest.mark.parametrize("error", [ValueError("boom"), SystemExit(3), TaskTimeout("slow"), WorkerDied("gone"),
                                   LeaseExpired("lease expired: worker w stopped renewing it")])
def test_other_errors_timeouts_deaths_and_expired_leases_go_through_the_policy(error: BaseException) -> None:
    policy = Policy(12.0)
    outcome = decide(plugins_with(policy), task(attempts=2), error)
    assert (outcome.action, outcome.delay, outcome.error, outcome.event) == (Action.RETRY, 12.0, error, "retried")
    assert policy.asked == [(2, error)]

    giving_up = Policy(None)
    outcome = decide(plugins_with(giving_up), task(attempts=2), error)
    assert (outcome.action, outcome.delay, outcome.error) == (Action.FAIL, None, error)


def test_a_policy_that_raises_fails_the_task_instead_of_losing_it() -> None:
    class Broken:
        @hookimpl
        def gta_retry_delay(self, task: Any, error: BaseException) -> float | None:
            raise RuntimeError("policy bug")
    plugins = plugins_with(Broken())
    assert decide(plugins, task(), ValueError("boom")).action is Action.FAIL
    assert plugins.hook_errors == 1


def test_a_lost_lease_writes_nothing() -> None:
    policy = Policy(1.0)
    for error in (None, ValueError("boom"), Fail("no")):
        assert decide(plugins_with(policy), task(), error, lease_lost=True) == Outcome(Action.NOTHING)
    assert policy.asked == []
