"""The plugin manager: discovery (named modules and the ``gta_handlers`` entry point group),
validation at start, disabling by name, and hooks that fail without taking GTA down."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

import gta_core
from gta_core.plugins import Registry, build_plugins, call_hook_safely, first_hook_result, report_task_events
from gta_core.runtime import get_runtime
from gta_core.tasks import TaskRecord

from ..support.plugins import NOT_INSTALLED

TEST_TASKS = {"record", "sleepy", "flaky", "always_fails", "fails_for_good", "retry_later", "crash", "greet"}
DEMO_TASKS = {"demo_hello", "demo_flaky", "demo_broken"}


def _record(attempts: int = 1, max_attempts: int = 3) -> TaskRecord:
    return TaskRecord(id=1, key="record", queue="default", args="{}", context=None,
                      attempts=attempts, max_attempts=max_attempts)


def test_registry_holds_named_modules_and_builtins() -> None:
    plugins = build_plugins(get_runtime(), ["tests.handlers.tasks"])
    registry = plugins.registry
    assert TEST_TASKS <= set(registry.tasks)
    assert not DEMO_TASKS & set(registry.tasks)  # the demo tasks are `gta demo`'s only
    assert registry.owners["record"] == "tests.handlers.tasks"
    assert registry.owners["gta_monitor"] == "monitor"
    assert registry.get("record").max_attempts == 3
    # the built-in retry policy is an ordinary plugin registered under its entry point name
    retry = plugins.manager.get_plugin("retry")
    assert retry is not None
    assert retry in [impl.plugin for impl in plugins.hook.gta_retry_delay.get_hookimpls()]


def test_unknown_key_names_the_key() -> None:
    registry = build_plugins(get_runtime(), ["tests.handlers.tasks"]).registry
    with pytest.raises(gta_core.UnknownTask, match="'no_such_task'"):
        registry.get("no_such_task")


def test_building_twice_gives_independent_managers() -> None:
    # nothing global: a second build neither sees the first one's modules nor conflicts with them
    with_tests = build_plugins(get_runtime(), ["tests.handlers.tasks"])
    without = build_plugins(get_runtime())
    assert "record" in with_tests.registry.tasks
    assert "record" not in without.registry.tasks
    assert with_tests.manager is not without.manager


@pytest.mark.parametrize("modules", [
    ["tests.handlers.plugins_bad.clash_a", "tests.handlers.plugins_bad.clash_b"],
    ["tests.handlers.tasks", "tests.handlers.plugins_bad.redefines_record"],
], ids=["two-new-modules", "clash-with-tests.handlers.tasks"])
def test_two_tasks_with_one_key_fail_at_start(modules: list[str]) -> None:
    key = "clash_key" if "clash" in modules[0] else "record"
    with pytest.raises(gta_core.PluginError) as info:
        build_plugins(get_runtime(), modules)
    message = str(info.value)
    assert f"'{key}'" in message
    for module in modules:  # both owners are named, so the user knows which two to reconcile
        assert module in message


def test_a_family_key_runs_every_key_that_starts_with_its_prefix() -> None:
    family = gta_core.task(key="reports:*")(lambda ctx: None)
    exact = gta_core.task(key="reports:yearly")(lambda ctx: None)
    registry = Registry({"reports:*": family, "reports:yearly": exact}, dict.fromkeys(["reports:*", "reports:yearly"],
                                                                                       "test"))
    assert registry.get("reports:daily") is family and registry.get("reports:a:b") is family
    assert registry.get("reports:yearly") is exact  # a key of its own wins
    for unknown in ("reports:*", "reports", "report:daily"):  # the family's own key names no task
        assert registry.find(unknown) is None
        with pytest.raises(gta_core.UnknownTask):
            registry.get(unknown)


def test_families_that_overlap_fail_at_start_and_take_no_limits() -> None:
    with pytest.raises(gta_core.PluginError, match="'reports:\\*'.*'reports:daily:\\*'.*overlap"):
        build_plugins(get_runtime(), ["tests.handlers.plugins_bad.overlapping_families"])
    with pytest.raises(ValueError, match="a family of keys takes no limits"):
        gta_core.task(key="reports:*", concurrency=1)(lambda ctx: None)
    with pytest.raises(ValueError, match="must match"):
        gta_core.task(key="reports*")(lambda ctx: None)


def test_hookimpl_matching_no_spec_fails_at_start() -> None:
    with pytest.raises(gta_core.PluginError, match="gta_nonexistent_hook"):
        build_plugins(get_runtime(), ["tests.handlers.tasks", "tests.handlers.plugins_bad.unknown_hook"])


def test_hookimpl_with_arguments_the_spec_lacks_fails_as_plugin_error() -> None:
    with pytest.raises(gta_core.PluginError) as info:
        build_plugins(get_runtime(), ["tests.handlers.plugins_bad.bad_hook_args"])
    message = str(info.value)
    assert "gta_retry_delay" in message and "bogus" in message
    assert "\n" not in message  # the CLIs print it as their one error line


@pytest.mark.parametrize("module", ["tests.handlers.plugins_bad.does_not_exist",
                                    "tests.handlers.plugins_bad.raises_on_import", "no_such_top_level_package_xyz"])
def test_unimportable_module_fails_with_plugin_error(module: str) -> None:
    with pytest.raises(gta_core.PluginError) as info:
        build_plugins(get_runtime(), [module])
    assert repr(module) in str(info.value)


@pytest.mark.parametrize("module, fragment", [
    ("tests.handlers.plugins_bad.not_a_task", "plain_function"),  # a list holding a plain function
    ("tests.handlers.plugins_bad.single_task", "not a list"),  # `return my_task` instead of `return [my_task]`
    ("tests.handlers.plugins_bad.handlers_raise", "cannot list my tasks"),
])
def test_handlers_hook_returning_garbage_fails(module: str, fragment: str) -> None:
    with pytest.raises(gta_core.PluginError) as info:
        build_plugins(get_runtime(), [module])
    assert module in str(info.value) and fragment in str(info.value)


def test_disabling_entry_point_plugin_by_name() -> None:
    plugins = build_plugins(get_runtime(), ["tests.handlers.tasks"], disabled=["monitor"])
    assert "gta_monitor" not in plugins.registry.tasks
    assert TEST_TASKS <= set(plugins.registry.tasks)
    assert plugins.manager.get_plugin("retry") is not None
    with pytest.raises(gta_core.UnknownTask):
        plugins.registry.get("gta_monitor")


def test_disabling_a_name_no_plugin_has_is_refused() -> None:
    """A typo would leave the plugin running while the operator believes it off."""
    with pytest.raises(gta_core.PluginError, match=r"cannot disable 'monitr': no plugin has that name \(plugins"):
        build_plugins(get_runtime(), ["tests.handlers.tasks"], disabled=["monitr"])
    disabled = build_plugins(get_runtime(), ["tests.handlers.tasks"], disabled=["tests.handlers.tasks"])
    assert "record" not in disabled.registry.tasks


def test_disabling_named_module_and_builtin_retry() -> None:
    plugins = build_plugins(get_runtime(), ["tests.handlers.tasks"], disabled=["tests.handlers.tasks", "retry"])
    assert not TEST_TASKS & set(plugins.registry.tasks)
    assert "gta_monitor" in plugins.registry.tasks
    assert plugins.hook.gta_retry_delay.get_hookimpls() == []


def test_disabling_a_broken_module_skips_it() -> None:
    plugins = build_plugins(get_runtime(), ["tests.handlers.tasks", "tests.handlers.plugins_bad.raises_on_import"],
                            disabled=["tests.handlers.plugins_bad.raises_on_import"])
    assert "record" in plugins.registry.tasks


def test_call_hook_safely_logs_and_counts_a_raising_plugin(caplog: pytest.LogCaptureFixture) -> None:
    plugins = build_plugins(get_runtime(),
                            ["tests.handlers.plugins_bad.faulty", "tests.handlers.plugins_bad.tenant_context"])
    with caplog.at_level(logging.ERROR, logger="gta.plugins"):
        results = call_hook_safely(plugins, "gta_capture_context")
    assert results == [{"tenant": "acme"}]  # the good plugin still answered
    assert plugins.hook_errors == 1
    failures = [r for r in caplog.records if r.name == "gta.plugins" and r.levelno == logging.ERROR]
    assert len(failures) == 1
    assert "tests.handlers.plugins_bad.faulty" in failures[0].getMessage()
    assert "gta_capture_context" in failures[0].getMessage()
    assert failures[0].exc_info is not None and "capture_context exploded" in str(failures[0].exc_info[1])
    call_hook_safely(plugins, "gta_capture_context")
    assert plugins.hook_errors == 2


def test_first_hook_result_skips_a_raising_plugin(caplog: pytest.LogCaptureFixture) -> None:
    plugins = build_plugins(get_runtime(), ["tests.handlers.plugins_bad.faulty"])
    with caplog.at_level(logging.ERROR, logger="gta.plugins"):
        delay = first_hook_result(plugins, "gta_retry_delay", task=_record(attempts=1), error=RuntimeError("x"))
        exhausted = first_hook_result(plugins, "gta_retry_delay", task=_record(attempts=3), error=RuntimeError("x"))
    assert isinstance(delay, float) and delay > 0  # the built-in retry policy answered
    assert exhausted is None  # out of attempts: the built-in policy gives up
    assert plugins.hook_errors == 2
    assert sum("tests.handlers.plugins_bad.faulty" in r.getMessage() for r in caplog.records) == 2


class _EventLog:
    """A plugin taking lifecycle events one task at a time."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    @gta_core.hookimpl
    def gta_task_event(self, event: str, task: Any, error: BaseException | None, duration: float | None) -> None:
        self.calls.append((event, task.id, error, duration))


class _BatchLog(_EventLog):
    """A plugin taking batches; its per-task hook must then stay silent."""

    @gta_core.hookimpl
    def gta_task_events(self, event: str, tasks: list[Any], errors: list[BaseException | None],
                        durations: list[float | None]) -> None:
        self.calls.append((event, [task.id for task in tasks], errors, durations))


def test_task_events_reach_each_plugin_once_per_event(caplog: pytest.LogCaptureFixture) -> None:
    plugins = build_plugins(get_runtime(), ["tests.handlers.plugins_bad.faulty"])
    single, batch = _EventLog(), _BatchLog()
    plugins.manager.register(single, name="single")
    plugins.manager.register(batch, name="batch")
    first, second = _record(), dataclasses.replace(_record(), id=2)
    error = RuntimeError("boom")
    with caplog.at_level(logging.ERROR, logger="gta.plugins"):
        report_task_events(plugins, "succeeded", [first, second], durations=[0.5, 0.25])
        report_task_events(plugins, "retried", [second], [error], [1.5])
        report_task_events(plugins, "started", [])  # nothing happened: no call at all
    assert single.calls == [("succeeded", 1, None, 0.5), ("succeeded", 2, None, 0.25), ("retried", 2, error, 1.5)]
    assert batch.calls == [("succeeded", [1, 2], [None, None], [0.5, 0.25]), ("retried", [2], [error], [1.5])]
    assert plugins.hook_errors == 2  # the faulty batch plugin raised twice; the others were still called
    assert sum("task_events exploded" in str(r.exc_info[1]) for r in caplog.records if r.exc_info) == 2


class _TimingWrapper:
    """A hook wrapper, as tracing or timing plugins write them: it must see every call."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    @gta_core.hookimpl(wrapper=True)
    def gta_retry_delay(self, task: Any, error: BaseException) -> Any:
        result = yield
        self.seen.append((task.attempts, result))
        return result


def test_hooks_go_through_pluggy_so_wrappers_and_tracing_see_them() -> None:
    """Hooks are called through pluggy's callers, not implementation by implementation: a
    wrapper sees the answer of the implementations it wraps (a faulty one among them answering
    None), and pluggy's call monitoring sees each call."""
    plugins = build_plugins(get_runtime(), ["tests.handlers.plugins_bad.faulty"])
    wrapper = _TimingWrapper()
    plugins.manager.register(wrapper, name="timing")
    traced: list[str] = []
    undo = plugins.manager.add_hookcall_monitoring(lambda name, impls, kwargs: traced.append(name),
                                                   lambda outcome, name, impls, kwargs: None)
    try:
        delay = first_hook_result(plugins, "gta_retry_delay", task=_record(attempts=1), error=RuntimeError("x"))
        report_task_events(plugins, "succeeded", [_record()])
        call_hook_safely(plugins, "gta_capture_context")
    finally:
        undo()
    assert wrapper.seen == [(1, delay)] and isinstance(delay, float)
    assert plugins.hook_errors == 3  # the faulty plugin raised in each hook; the others still answered
    # no plugin here takes events one task at a time: no gta_task_event call at all
    assert traced == ["gta_retry_delay", "gta_task_events", "gta_capture_context"]


# -- entry point discovery (tests/handlers/example_pkg, installed with `pip install -e tests/handlers/example_pkg`) --
def test_entry_point_plugin_is_discovered_without_naming_it() -> None:
    plugins = build_plugins(get_runtime())
    assert "example_double" in plugins.registry.tasks, NOT_INSTALLED
    assert plugins.registry.owners["example_double"] == "example"
    definition = plugins.registry.get("example_double")
    assert definition.max_attempts == 2
    definition.check_args({"x": 3})
    with pytest.raises(gta_core.InvalidArguments):
        definition.check_args({"y": 3})


def test_entry_point_plugin_can_be_disabled_by_name() -> None:
    plugins = build_plugins(get_runtime(), ["tests.handlers.tasks"], disabled=["example"])
    assert "example_double" not in plugins.registry.tasks
    assert "record" in plugins.registry.tasks
