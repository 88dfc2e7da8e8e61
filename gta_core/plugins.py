"""Building the plugin manager and the task registry, in a function, never at import time."""
from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import pluggy

from . import hookspecs
from .errors import PluginError, UnknownTask
from .schedules import Periodic
from .tasks import TaskDefinition

if TYPE_CHECKING:  # the runtime builds the plugins and hands itself in: no import back
    from .runtime import Runtime

log = logging.getLogger("gta.plugins")
#: the hint of `UnknownTask`: the usual cause is a handler module loaded by the supervisor only
WHERE_HANDLERS_LOAD = ("a process that submits tasks needs their handlers too: expose the module through the "
                       "gta_handlers entry point group, or set GTA_PLUGINS=your.module (gta --plugin) here as well "
                       "as on the supervisor")
#: hooks called once, while the plugins are built, whose failures are `PluginError`s naming the plugin
BUILD_TIME_HOOKS = ("gta_handlers", "gta_periodic")


@dataclasses.dataclass
class Registry:
    """Every task definition by key (families, ``prefix:*``, among them), and the plugin that
    provided it."""

    tasks: dict[str, TaskDefinition]
    owners: dict[str, str]

    def __post_init__(self) -> None:
        self._families = [(definition.family_prefix, definition) for definition in self.tasks.values()
                          if definition.family_prefix is not None]

    def find(self, key: str) -> TaskDefinition | None:
        """The handler of ``key``: its own, else its family's (``django:x`` → ``django:*``);
        None when neither is registered. A family's key itself names no task."""
        definition = self.tasks.get(key)
        if definition is not None:
            return None if definition.family_prefix is not None else definition
        for prefix, family in self._families:
            if key.startswith(prefix):
                return family
        return None

    def get(self, key: str) -> TaskDefinition:
        definition = self.find(key)
        if definition is None:
            raise UnknownTask(f"unknown task {key!r}: no handler is registered under this key in this process "
                              f"(known: {', '.join(sorted(self.tasks)) or 'none'}); {WHERE_HANDLERS_LOAD}")
        return definition


@dataclasses.dataclass
class Plugins:
    """The plugin manager and the task registry built from it.

    Hooks are called through pluggy's hook callers (`hook`), so hook wrappers, tracing and
    call monitoring see every call; each implementation is guarded (`_guard`, as the plugins
    are built), so one plugin's error is logged and counted in `hook_errors` and the others
    still answer.
    """

    manager: pluggy.PluginManager
    registry: Registry
    #: what hooks that take ``gta`` receive: the process's `Runtime` (see `hookspecs.gta_handlers`)
    gta: Runtime = dataclasses.field(repr=False)
    hook_errors: int = 0
    _per_task_events: Any = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        _guard(self)

    @property
    def hook(self) -> Any:
        return self.manager.hook

    @functools.cached_property
    def implemented(self) -> frozenset[str]:
        """The hooks at least one plugin implements (no plugin is registered after
        `build_plugins` returns): a scope nobody holds costs a set look-up (`scopes.scope`)."""
        return frozenset(name for name, caller in vars(self.manager.hook).items()
                         if isinstance(caller, pluggy.HookCaller) and caller.get_hookimpls())

    def per_task_event_hook(self) -> Any:
        """`gta_task_event`'s caller without the plugins that take batches of events (a plugin
        implementing `gta_task_events` gets every event there). Built once: no plugin is
        registered after `build_plugins` returns."""
        if self._per_task_events is None:
            batched = [impl.plugin for impl in self.hook.gta_task_events.get_hookimpls()]
            self._per_task_events = self.manager.subset_hook_caller("gta_task_event", remove_plugins=batched)
        return self._per_task_events


def build_plugins(gta: Runtime, extra_modules: Iterable[str] = (), disabled: Iterable[str] = ()) -> Plugins:
    """Specs, then entry-point plugins (the built-ins among them), then named modules.

    ``gta`` is what hooks taking that argument receive: the `Runtime` building the plugins. The
    host passes itself in (as pluggy's eggsample host does), so nothing here reaches back for it.

    Raises `PluginError` for a module that cannot be imported, a hookimpl that matches no
    spec, or two tasks with one key.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    extra_modules, disabled = list(extra_modules), list(disabled)
    _check_disabled(disabled, extra_modules)
    for name in disabled:
        manager.set_blocked(name)
    try:
        manager.load_setuptools_entrypoints(hookspecs.ENTRY_POINT_GROUP)
    except Exception as exc:  # an installed plugin that fails to import
        raise PluginError(f"could not load a {hookspecs.ENTRY_POINT_GROUP} entry point: {_one_line(exc)}") from exc
    for module_name in extra_modules:
        if manager.is_blocked(module_name):
            continue
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise PluginError(f"could not import plugin module {module_name!r}: {exc}{_import_hint(exc, module_name)}"
                              ) from exc
        if not manager.is_registered(module):
            _register(manager, module, module_name)
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin hook matches no hook specification: {_one_line(exc)}") from exc
    return Plugins(manager, _build_registry(manager, gta), gta)


def _import_hint(exc: Exception, module_name: str) -> str:
    """What to do when a plugin module's package is not on the path (not when the module itself
    fails to import something): run from the directory that holds it, or put that on PYTHONPATH."""
    top = module_name.split(".")[0]
    if not isinstance(exc, ModuleNotFoundError) or exc.name not in (top, module_name):
        return ""
    here = os.getcwd()
    if exc.name == top and not any(os.path.exists(os.path.join(here, top + end)) for end in ("", ".py")):
        return (f" (the working directory {here} has no {top!r}: run from the directory that contains it, "
                f"or add that directory to PYTHONPATH)")
    return f" (add the directory that contains {top!r} to PYTHONPATH)"


def _check_disabled(disabled: Sequence[str], extra_modules: Sequence[str]) -> None:
    """`PluginError` for a name to disable that no plugin has: a typo would leave the plugin
    running (its periodic task, its hooks) while the operator believes it off."""
    if not disabled:  # the common case: no scan of every installed distribution's entry points
        return
    names = {entry_point.name for entry_point in importlib.metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP)}
    names.update(extra_modules)
    unknown = [name for name in disabled if name not in names]
    if unknown:
        raise PluginError(f"cannot disable {', '.join(map(repr, unknown))}: no plugin has that name "
                          f"(plugins here: {', '.join(sorted(names)) or 'none'})")


def _guard(plugins: Plugins) -> None:
    """Make each implementation of the hooks called at run time log and count what it raises
    and answer None instead, so that pluggy goes on to the next one. Hook wrappers are left
    as they are: they see the other implementations' results and exceptions, as pluggy means."""
    callers = [caller for caller in vars(plugins.manager.hook).values() if isinstance(caller, pluggy.HookCaller)]
    for caller in callers:
        if caller.name in BUILD_TIME_HOOKS:
            continue
        for impl in caller.get_hookimpls():
            if not (impl.hookwrapper or impl.wrapper):
                # pluggy calls ``impl.function`` at each call; its Final marks it as not for plugins to change
                impl.function = _guarded(plugins, impl.function, impl.plugin_name, caller.name)  # type: ignore[misc]


def _guarded(plugins: Plugins, function: Callable[..., Any], plugin_name: str, hook_name: str) -> Callable[..., Any]:
    def guarded(*args: Any) -> Any:
        try:
            return function(*args)
        except Exception:
            log.exception("plugin %r failed in hook %s", plugin_name, hook_name)
            plugins.hook_errors += 1
            return None
    return guarded


def _register(manager: pluggy.PluginManager, module: Any, name: str) -> None:
    """Register a named module, reporting a hookimpl whose arguments its spec lacks as `PluginError`.

    pluggy validates a hookimpl against an existing spec at registration time (not in
    ``check_pending``), so without this a misspelled argument escaped as a raw
    ``PluginValidationError``, which the CLIs print as a traceback instead of one line.
    """
    try:
        manager.register(module, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {name!r} does not match the hook specification: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    """pluggy's validation messages span several lines; GTA's errors are one line."""
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def _build_registry(manager: pluggy.PluginManager, gta: Runtime) -> Registry:
    tasks: dict[str, TaskDefinition] = {}
    owners: dict[str, str] = {}
    for impl in manager.hook.gta_handlers.get_hookimpls():
        plugin_name = impl.plugin_name
        try:
            definitions = impl.function(*_given(impl, gta)) or []
        except Exception as exc:
            raise PluginError(f"plugin {plugin_name!r}: gta_handlers() raised {exc!r}") from exc
        # a bare `return my_task` would otherwise escape as "not iterable" TypeError, a traceback
        if not isinstance(definitions, Iterable) or isinstance(definitions, (str, bytes, Mapping)):
            raise PluginError(f"plugin {plugin_name!r}: gta_handlers() returned {definitions!r}, "
                              "not a list of @gta_core.task definitions")
        for definition in definitions:
            if not isinstance(definition, TaskDefinition):
                raise PluginError(f"plugin {plugin_name!r}: gta_handlers() returned {definition!r}, "
                                  "which is not a @gta_core.task definition")
            if definition.key in tasks and tasks[definition.key] is not definition:
                raise PluginError(f"two tasks with key {definition.key!r}: from plugins "
                                  f"{owners[definition.key]!r} and {plugin_name!r}")
            tasks[definition.key] = definition
            owners[definition.key] = plugin_name
    _check_families(tasks, owners)
    return Registry(tasks, owners)


def _check_families(tasks: Mapping[str, TaskDefinition], owners: Mapping[str, str]) -> None:
    """`PluginError` for two families of which one contains the other (``a:*`` and ``a:b:*``):
    which handler runs ``a:b:c`` would depend on the order plugins load in."""
    prefixes = sorted(key[:-1] for key, definition in tasks.items() if definition.family_prefix is not None)
    for shorter, longer in zip(prefixes, prefixes[1:], strict=False):
        if longer.startswith(shorter):
            raise PluginError(f"task families {shorter + '*'!r} (plugin {owners[shorter + '*']!r}) and "
                              f"{longer + '*'!r} (plugin {owners[longer + '*']!r}) overlap")


def call_hook_safely(plugins: Plugins, name: str, **kwargs: Any) -> list[Any]:
    """Call a broadcast hook: its implementations' answers other than None. What a faulty
    plugin throws is logged and counted, never raised, and hides no other plugin's answer.
    Hooks that take ``gta`` get `Plugins.gta`.
    """
    kwargs.setdefault("gta", plugins.gta)
    return list(getattr(plugins.hook, name)(**kwargs))


def first_hook_result(plugins: Plugins, name: str, **kwargs: Any) -> Any:
    """Call a firstresult hook guarded like `call_hook_safely`: the first non-None answer wins."""
    kwargs.setdefault("gta", plugins.gta)
    return getattr(plugins.hook, name)(**kwargs)


def report_task_events(plugins: Plugins, event: str, tasks: Sequence[Any],
                       errors: Sequence[BaseException | None] | None = None,
                       durations: Sequence[float | None] | None = None) -> None:
    """Tell the plugins that ``tasks`` had lifecycle ``event``, guarded like `call_hook_safely`:
    one `gta_task_events` call for the plugins that take batches, one `gta_task_event` call per
    task for the others."""
    if not tasks:
        return
    errors = list(errors) if errors is not None else [None] * len(tasks)
    durations = list(durations) if durations is not None else [None] * len(tasks)
    plugins.hook.gta_task_events(event=event, tasks=list(tasks), errors=errors, durations=durations)
    per_task = plugins.per_task_event_hook()
    if per_task.get_hookimpls():
        for task, error, duration in zip(tasks, errors, durations, strict=True):
            per_task(event=event, task=task, error=error, duration=duration)


def _given(impl: Any, gta: Runtime) -> list[Any]:
    """The arguments of a hook whose only argument is ``gta``, for an implementation that
    names it or not."""
    return [gta] if "gta" in impl.argnames else []


def periodic_definitions(plugins: Plugins) -> list[Periodic]:
    """Every plugin's `gta_periodic()` answer; a raising plugin or a stray object is a `PluginError`."""
    found: list[Periodic] = []
    for impl in plugins.manager.hook.gta_periodic.get_hookimpls():
        try:
            jobs: list[Any] = list(cast("Iterable[Any]", impl.function(*_given(impl, plugins.gta)) or []))
        except Exception as exc:
            raise PluginError(f"plugin {impl.plugin_name!r}: gta_periodic() raised {exc!r}") from exc
        for job in jobs:
            if not isinstance(job, Periodic):
                raise PluginError(f"plugin {impl.plugin_name!r}: gta_periodic() returned {job!r}, "
                                  "not a gta_core.periodic(...) definition")
            found.append(job)
    return found
