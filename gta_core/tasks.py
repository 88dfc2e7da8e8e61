"""Task definitions (`@task`), the leased-task record and the context a handler receives."""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import inspect
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, overload

from .errors import Fail, InvalidArguments, InvalidLimit
from .limit_rules import Rate, check_concurrency, parse_rate

DEFAULT_QUEUE = "default"
DEFAULT_MAX_ATTEMPTS = 5
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,190}$")
#: a family of keys, ``prefix:*``: one handler for every key that starts with ``prefix:``
_FAMILY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,188}:\*$")
FAMILY_SUFFIX = "*"


def family_prefix(key: str) -> str | None:
    """``"django:"`` for a family key ``"django:*"`` (the handler of every key beginning so),
    None for an ordinary key."""
    return key[:-len(FAMILY_SUFFIX)] if key.endswith(FAMILY_SUFFIX) else None


def covers(handler_key: str, key: str) -> bool:
    """Whether the handler registered under ``handler_key`` runs tasks of ``key``: its own key,
    or a family (``django:*``) that ``key`` begins with (a family's key itself names no task)."""
    prefix = family_prefix(handler_key)
    if prefix is None:
        return handler_key == key
    return key.startswith(prefix) and not key.endswith(FAMILY_SUFFIX)


@dataclasses.dataclass(frozen=True)
class TaskDefinition:
    """A handler and its options. Calling it calls the handler directly."""

    key: str
    fn: Callable[..., Any]
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout: float | None = None
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    #: delete the row when the task succeeds (GTA's clean_succeeded) instead of keeping history
    clean_succeeded: bool = False
    #: a task still pending after initialized_timeout is not run; it ends failed (GTA's option)
    init_timeout_sensitive: bool = False
    #: at most this many of these tasks run at once across every supervisor (per
    #: ``concurrency_key`` value when that is set); None: no cap (see `gta_core.limits`)
    concurrency: int | None = None
    #: the argument whose value is the task's concurrency key (``submit(concurrency_key=)`` overrides)
    concurrency_key: str | None = None
    #: at most this many starts per fixed window, across every supervisor
    rate_limit: Rate | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    @property
    def family_prefix(self) -> str | None:
        """`family_prefix` of this definition's key."""
        return family_prefix(self.key)

    @functools.cached_property
    def is_async(self) -> bool:
        """An ``async def`` handler: a worker runs it on its event loop (`async_runner`)."""
        return inspect.iscoroutinefunction(self.fn)

    @functools.cached_property
    def signature(self) -> inspect.Signature:
        return inspect.signature(self.fn)

    @functools.cached_property
    def _keyword_shape(self) -> tuple[frozenset[str], frozenset[str]] | None:
        """(accepted names, required names) when ``fn(ctx, **args)`` binds by those alone,
        or None when only `inspect.Signature.bind` can tell (``**kwargs``, positional-only)."""
        accepted, required = set(), set()
        for parameter in list(self.signature.parameters.values())[1:]:
            if parameter.kind not in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                return None
            accepted.add(parameter.name)
            if parameter.default is parameter.empty:
                required.add(parameter.name)
        return frozenset(accepted), frozenset(required)

    def check_args(self, args: Mapping[str, Any]) -> None:
        """Raise `InvalidArguments` unless ``fn(ctx, **args)`` would bind.

        Runs before every execution, so the common shape is checked with two set operations;
        `inspect.Signature.bind` (slow) decides the rest and words the error.
        """
        shape = self._keyword_shape
        if shape is not None and shape[1] <= args.keys() <= shape[0]:
            return
        try:
            self.signature.bind(None, **args)
        except TypeError as exc:
            raise InvalidArguments(f"arguments for task {self.key!r} do not match "
                                   f"{self.key}{self.signature}: {exc}") from None


@overload
def task(fn: Callable[..., Any], /) -> TaskDefinition: ...


@overload
def task(
    *,
    key: str | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    timeout: float | None = None,
    queue: str = DEFAULT_QUEUE,
    priority: int = 0,
    clean_succeeded: bool = False,
    init_timeout_sensitive: bool = False,
    concurrency: int | None = None,
    concurrency_key: str | None = None,
    rate_limit: str | None = None,
) -> Callable[[Callable[..., Any]], TaskDefinition]: ...


def task(
    fn: Callable[..., Any] | None = None,
    *,
    key: str | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    timeout: float | None = None,
    queue: str = DEFAULT_QUEUE,
    priority: int = 0,
    clean_succeeded: bool = False,
    init_timeout_sensitive: bool = False,
    concurrency: int | None = None,
    concurrency_key: str | None = None,
    rate_limit: str | None = None,
) -> Any:
    """Declare a task handler ``fn(ctx, **args)``; its key defaults to the function name.

    Usable bare (``@task``) or with options (``@task(max_attempts=3, queue="mail")``).
    A key ``prefix:*`` declares a family: the handler runs every task whose key starts with
    ``prefix:`` and no handler has as its own key (``ctx.key`` tells which); the Django tasks
    backend stores each Django task under ``django:<its path>`` this way. A family takes no limits.
    ``concurrency``, ``concurrency_key`` and ``rate_limit`` are global limits (docs/workflows.md,
    "Limits"); a bad value raises `InvalidLimit` here, at decoration time.
    """

    cap = None if concurrency is None else check_concurrency(concurrency)  # refused before the function
    rate = None if rate_limit is None else parse_rate(rate_limit)

    def wrap(func: Callable[..., Any]) -> TaskDefinition:
        name = key or func.__name__
        if not (_KEY.match(name) or _FAMILY.match(name)):
            raise ValueError(f"task key {name!r} must match {_KEY.pattern} (or {_FAMILY.pattern} for a family)")
        if _FAMILY.match(name) and (concurrency is not None or rate_limit is not None):
            raise ValueError(f"task {name!r}: a family of keys takes no limits (they count one key each)")
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"task {name!r}: max_attempts must be an integer >= 1")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"task {name!r}: timeout must be > 0 seconds")
        params = list(inspect.signature(func).parameters.values())
        if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
            raise ValueError(f"task {name!r}: the handler's first parameter must be the context")
        if concurrency_key is not None:
            _check_key_argument(name, params[1:], concurrency_key)
        return TaskDefinition(name, func, max_attempts, timeout, queue, priority,
                              clean_succeeded, init_timeout_sensitive, cap, concurrency_key, rate)

    return wrap(fn) if fn is not None else wrap


def _check_key_argument(name: str, params: list[inspect.Parameter], argument: Any) -> None:
    """``concurrency_key`` must name an argument the handler takes (by keyword)."""
    if not isinstance(argument, str) or not argument:
        raise InvalidLimit(f"task {name!r}: concurrency_key {argument!r} must be the name of an argument")
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return
    if not any(p.name == argument and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params):
        raise InvalidLimit(f"task {name!r}: concurrency_key {argument!r} is not an argument of the handler")


def dump_args(key: str, args: Mapping[str, Any] | None, what: str = "arguments") -> str:
    """Encode task arguments (or, with ``what="context"``, a context) as JSON text, refusing
    anything JSON cannot carry faithfully."""
    if not args:  # None or empty: the common case, nothing to encode or check
        if args is None or isinstance(args, Mapping):
            return "{}"
    if type(args) is not dict and not isinstance(args, Mapping):  # the ABC check only for a non-dict
        raise InvalidArguments(f"{what} for task {key!r} must be a dict, not {type(args).__name__}")
    try:
        text = _encode(args)
        problem = None if _survives_json(args) else _changed_by_json(args, what)
    except RecursionError:
        raise InvalidArguments(f"{what} for task {key!r} are nested too deeply to encode as JSON") from None
    except (TypeError, ValueError) as exc:
        raise InvalidArguments(f"{what} for task {key!r} are not JSON-serializable: {exc}") from None
    if problem:
        raise InvalidArguments(f"{what} for task {key!r} would not survive JSON unchanged: {problem}")
    return text


#: how arguments are stored: compact, sorted (so equal arguments are equal text), finite numbers
_ARGS_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"), sort_keys=True)


#: `_ARGS_ENCODER`'s own C encoder, with its options, made once and without its record of the
#: containers being encoded: ``encode`` builds both on every call, two thirds of its cost for a
#: small dict (a batch of 1,000 submits pays it per row). What that record catches, a cycle, is
#: caught as deep recursion instead, and `_encode` then has ``encode`` word the error.
_MAKE_ENCODER: Any = getattr(json.encoder, "c_make_encoder", None)  # None where the C accelerator is missing
_FAST_ENCODER = (_MAKE_ENCODER(None, _ARGS_ENCODER.default, json.encoder.encode_basestring_ascii, None,
                               _ARGS_ENCODER.key_separator, _ARGS_ENCODER.item_separator, _ARGS_ENCODER.sort_keys,
                               _ARGS_ENCODER.skipkeys, _ARGS_ENCODER.allow_nan)
                 if _MAKE_ENCODER is not None else None)


def _encode(args: Mapping[str, Any]) -> str:
    """``_ARGS_ENCODER.encode(args)``, the same text, faster; its errors are ``encode``'s own."""
    if _FAST_ENCODER is not None:
        try:
            return "".join(_FAST_ENCODER(args, 0))
        except (TypeError, ValueError, RecursionError):
            pass  # let the full encoder raise, with its message (a cycle is named as one)
    return _ARGS_ENCODER.encode(args)


def _survives_json(value: Any) -> bool:
    """Whether a value `json.dumps` accepted comes back equal: `_changed_by_json` without the
    paths it names, which cost more than the check (a batch of 1,000 submits pays it per row)."""
    if isinstance(value, dict):
        for name, item in value.items():  # a loop, not all(): no generator per dict
            if not isinstance(name, str) or (type(item) not in _SCALARS and not _survives_json(item)):
                return False
        return True
    if isinstance(value, list):
        return all(type(item) in _SCALARS or _survives_json(item) for item in value)
    return not isinstance(value, tuple)


#: what JSON carries unchanged and holds nothing further to check (the common argument)
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _changed_by_json(value: Any, path: str) -> str | None:
    """Where a value that `json.dumps` accepted would come back different, or None.

    ``json.dumps`` quietly turns tuples into lists and non-string keys into strings, so the
    handler would receive other arguments than were submitted; refuse those instead.
    """
    if isinstance(value, tuple):
        return f"{path} is a tuple, which would come back as a list"
    items: list[tuple[str, Any]] = []
    if isinstance(value, list):
        items = [(f"{path}[{index}]", item) for index, item in enumerate(value)]
    elif isinstance(value, dict):
        for name, item in value.items():
            if not isinstance(name, str):
                return f"{path} has the key {name!r}, which would come back as the string {json.dumps(name)!r}"
            items.append((f"{path}[{name!r}]", item))
    for item_path, item in items:
        problem = _changed_by_json(item, item_path)
        if problem:
            return problem
    return None


#: what decoding JSON a row holds can raise (text written by hand, or nested too deeply)
_BAD_JSON = (TypeError, ValueError, RecursionError)


@dataclasses.dataclass
class TaskRecord:
    """A task row as a worker or an admin sees it."""

    id: int
    key: str
    queue: str
    args: str
    context: str | None
    attempts: int
    max_attempts: int
    priority: int = 0
    run_at: dt.datetime | None = None
    status: str = "running"
    lease_owner: str | None = None
    #: the group this task is a member of (`gta_core.workflows`), whose count its final write updates
    group_id: int | None = None
    last_error: str | None = None
    created_at: dt.datetime | None = None

    def decoded_args(self) -> dict[str, Any]:
        if self.args == "{}":  # most tasks take no arguments: skip the decoder
            return {}
        try:
            value = json.loads(self.args)
        except _BAD_JSON as exc:  # fail at once: retrying cannot help
            raise InvalidArguments(f"task {self.id} arguments are not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise InvalidArguments(f"task {self.id} arguments are not a JSON object")
        return value

    def decoded_context(self) -> dict[str, Any]:
        """The captured context; JSON that is not an object (``null``, a list) carries none."""
        if not self.context:
            return {}
        try:
            value = json.loads(self.context)
        except _BAD_JSON as exc:
            raise InvalidArguments(f"task {self.id} context is not valid JSON: {exc}") from None
        return value if isinstance(value, dict) else {}

    def check_attempts(self) -> None:
        """Refuse a leased row whose counters were out of range (a row edited by hand).

        Leasing counts an attempt only on a row with ``0 <= attempts < max_attempts`` and
        sets any other row's ``attempts`` to 0, so a sound lease always has
        ``1 <= attempts <= max_attempts``; anything else must not run.
        """
        if not 1 <= self.attempts <= self.max_attempts:
            raise Fail(f"not run: the row's attempt counter was out of range when leased (attempts must be "
                       f"0 to max_attempts - 1 while pending, max_attempts={self.max_attempts} at least 1)")


class Spawner(Protocol):
    """Where a running task's ``ctx.submit``, ``ctx.group`` and ``ctx.chain`` go: whatever runs
    the handler (a worker's runner, eager mode) checks each request at once, as submit would,
    and keeps it, to be created with the attempt's success."""

    def child(self, key: str, args: Mapping[str, Any] | None, **options: Any) -> None: ...

    def group(self, members: list[Any], on_complete: Any) -> None: ...

    def chain(self, steps: list[Any]) -> None: ...


_MAKING_CONDITION = threading.Lock()


class LazyEvent(threading.Event):
    """A `threading.Event` that makes its condition (a lock and a list of waiters) when it is
    first set, cleared or waited on, not when it is made.

    Every attempt gets one, ``ctx.cancel_event``, and nearly none is ever set or waited on;
    `threading.Event` builds its `threading.Condition` up front, 2.6 µs here, a tenth of the
    async runner's time per task (`benchmarks/README.md`). Reading the flag takes no lock, as
    in `threading.Event`: the flag only changes under the condition's lock.
    """

    def __init__(self) -> None:  # not threading.Event's: it would build the condition now
        self._flag = False
        self._made: threading.Condition | None = None

    def _condition(self) -> threading.Condition:
        condition = self._made
        if condition is None:
            with _MAKING_CONDITION:  # two threads' first uses make one condition
                if self._made is None:
                    self._made = threading.Condition(threading.Lock())
                condition = self._made
        return condition

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} at {id(self):#x}: {'set' if self._flag else 'unset'}>"

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        condition = self._condition()
        with condition:
            self._flag = True
            condition.notify_all()

    def clear(self) -> None:
        with self._condition():
            self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        if self._flag:
            return True
        condition = self._condition()
        with condition:
            return self._flag or condition.wait(timeout)


@dataclasses.dataclass
class TaskContext:
    """What a handler gets as its first argument."""

    task_id: int
    key: str
    attempt: int
    max_attempts: int
    queue: str
    context: dict[str, Any]
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger]
    #: set when the task is cancelled while it runs; long handlers should check it and return
    cancel_event: threading.Event = dataclasses.field(default_factory=LazyEvent)
    #: the worker holding this task's lease (host:pid:...), as written in ``lease_owner``
    lease_owner: str = ""
    #: where `submit`, `group` and `chain` buffer what this attempt creates: set by what runs the
    #: handler, None outside a running task
    spawner: Spawner | None = dataclasses.field(default=None, repr=False)

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts

    @property
    def cancelled(self) -> bool:
        """True once someone cancelled this task (cooperative cancellation)."""
        return self.cancel_event.is_set()

    def submit(self, key: str, args: Mapping[str, Any] | None = None, **options: Any) -> None:
        """Buffer a child task; it is inserted, with ``parent_id``, in the transaction that
        records this task's success. A retried parent never duplicates its children, a parent
        that fails for good leaves none, and children start only after the parent finished.

        Arguments are checked now, exactly as `gta_core.submit` checks them.
        """
        self._spawner("submit").child(key, args, **options)

    def group(self, members: Iterable[Any], on_complete: Any) -> None:
        """Buffer a group (as `gta_core.group`): its members and callback are created with this
        task's success, as children are, and checked now."""
        self._spawner("group").group(list(members), on_complete)

    def chain(self, steps: Iterable[Any]) -> None:
        """Buffer a chain (as `gta_core.chain`), created with this task's success."""
        self._spawner("chain").chain(list(steps))

    def _spawner(self, method: str) -> Spawner:
        if self.spawner is None:
            raise RuntimeError(f"ctx.{method} is only available inside a running task")
        return self.spawner
