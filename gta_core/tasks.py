"""Task definitions (`@task`), the leased-task record and the context a handler receives."""
from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any, overload

from .errors import InvalidArguments

DEFAULT_QUEUE = "default"
DEFAULT_MAX_ATTEMPTS = 5
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,190}$")


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

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    @property
    def signature(self) -> inspect.Signature:
        return inspect.signature(self.fn)

    def check_args(self, args: Mapping[str, Any]) -> None:
        """Raise `InvalidArguments` unless ``fn(ctx, **args)`` would bind."""
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
) -> Any:
    """Declare a task handler ``fn(ctx, **args)``; its key defaults to the function name.

    Usable bare (``@task``) or with options (``@task(max_attempts=3, queue="mail")``).
    """

    def wrap(func: Callable[..., Any]) -> TaskDefinition:
        name = key or func.__name__
        if not _KEY.match(name):
            raise ValueError(f"task key {name!r} must match {_KEY.pattern}")
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"task {name!r}: max_attempts must be an integer >= 1")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"task {name!r}: timeout must be > 0 seconds")
        params = list(inspect.signature(func).parameters.values())
        if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
            raise ValueError(f"task {name!r}: the handler's first parameter must be the context")
        return TaskDefinition(name, func, max_attempts, timeout, queue, priority,
                              clean_succeeded, init_timeout_sensitive)

    return wrap(fn) if fn is not None else wrap


def dump_args(key: str, args: Mapping[str, Any] | None) -> str:
    """Encode task arguments as JSON text, refusing anything JSON cannot carry faithfully."""
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        raise InvalidArguments(f"arguments for task {key!r} must be a dict of keyword arguments, "
                               f"not {type(args).__name__}")
    try:
        text = json.dumps(args, allow_nan=False, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InvalidArguments(f"arguments for task {key!r} are not JSON-serializable: {exc}") from None
    problem = _changed_by_json(args, "args")
    if problem:
        raise InvalidArguments(f"arguments for task {key!r} would not survive JSON unchanged: {problem}")
    return text


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
    last_error: str | None = None
    created_at: dt.datetime | None = None

    def decoded_args(self) -> dict[str, Any]:
        value = json.loads(self.args)
        if not isinstance(value, dict):
            raise InvalidArguments(f"task {self.id} arguments are not a JSON object")
        return value

    def decoded_context(self) -> dict[str, Any]:
        if not self.context:
            return {}
        value = json.loads(self.context)
        return value if isinstance(value, dict) else {}


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
    cancel_event: threading.Event = dataclasses.field(default_factory=threading.Event)
    #: child tasks buffered by `submit`, inserted with the parent's success (see there)
    children: list[Any] = dataclasses.field(default_factory=list)
    #: validates a child request and returns the row to insert (set by the worker)
    prepare_child: Callable[..., Any] | None = None
    #: the worker holding this task's lease (host:pid:...), as written in ``lease_owner``
    lease_owner: str = ""

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
        if self.prepare_child is None:
            raise RuntimeError("ctx.submit is only available inside a running task")
        self.children.append(self.prepare_child(key, args, **options))
