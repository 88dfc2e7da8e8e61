"""Checking a submit request completely before anything is written, and turning it into the row.

`submit`/`submit_many`, a handler's ``ctx.submit`` of a child (checked when it is called, inserted
with its parent's success), eager mode and the supervisor's periodic slots all go through
`prepare`, so a request is refused the same way wherever it comes from: arguments are
JSON-encodable, the key is known, the arguments bind to the handler's signature, every option
fits its column.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from .errors import InvalidArguments
from .limit_rules import concurrency_key_value
from .plugins import call_hook_safely
from .runtime import Runtime
from .store.inserts import NewTask
from .tasks import TaskDefinition, dump_args

Delay = float | int | dt.timedelta
#: bounds of the INTEGER columns (priority, max_attempts) on PostgreSQL and MySQL
INT_LIMIT = 2**31
#: the longest delay: far beyond any real schedule, and run_at stays a representable timestamp
MAX_DELAY = 100 * 365.25 * 86400
STORABLE_RULE = ("must be a non-empty string of at most 191 characters, without NUL or lone surrogates, "
                 "not ending in a space")


@dataclasses.dataclass(frozen=True)
class TaskRequest:
    """One task to submit; see `submit` for the meaning of each field."""

    key: str
    args: Mapping[str, Any] | None = None
    delay: Delay | None = None
    run_at: dt.datetime | None = None
    priority: int | None = None
    queue: str | None = None
    dedupe_key: str | None = None
    order_key: str | None = None
    max_attempts: int | None = None
    context: Mapping[str, Any] | None = None
    parent_id: int | None = None
    #: the value limits count this task under (docs/workflows.md, "Limits"); by default the
    #: value of the argument the task's ``@task(concurrency_key=...)`` names
    concurrency_key: str | None = None


def capture_context(runtime: Runtime) -> dict[str, Any]:
    """What every plugin's ``gta_capture_context`` returns, merged: the context a task submitted
    now (by `submit`, or by ``ctx.submit`` inside a handler) carries to its handler."""
    merged: dict[str, Any] = {}
    for part in call_hook_safely(runtime.plugins, "gta_capture_context"):
        if isinstance(part, Mapping):
            merged.update(part)
    return merged


def prepare(runtime: Runtime, request: TaskRequest, captured: Mapping[str, Any] | None = None) -> NewTask:
    """Check a request completely and turn it into the row to insert; raises `SubmitError`."""
    return Preparer(runtime, captured)(request)


class Preparer:
    """`prepare` for the requests of one batch (a `submit_many`), with the same checks and errors.

    What depends only on a request's key when it leaves queue, priority and max_attempts to the
    handler's definition (the definition and those three, checked), and the context when a
    request adds none to the captured one (its JSON), is worked out once per batch instead of
    once per row: a third of the preparation of a batch of 1,000.
    """

    def __init__(self, runtime: Runtime, captured: Mapping[str, Any] | None = None) -> None:
        self.runtime = runtime
        self.captured = captured or {}
        self.defaults: dict[str, tuple[TaskDefinition, int, int, str]] = {}
        self.captured_text: dict[str, str | None] = {}  # by key: the message names the task

    def __call__(self, request: TaskRequest) -> NewTask:
        # each field read once into a local, and the checks of options left unset skipped:
        # a batch of 1,000 submits runs this per row
        key, args = request.key, request.args
        if not isinstance(key, str):
            raise InvalidArguments(f"task key must be a string, not {type(key).__name__}")
        if request.priority is None and request.max_attempts is None and request.queue is None:
            found = self.defaults.get(key)
            if found is None:
                found = self.defaults[key] = self._options(key, request)
            definition, priority, max_attempts, queue = found
        else:
            definition, priority, max_attempts, queue = self._options(key, request)
        args_text = _bounded(self.runtime, key, args, "arguments")
        definition.check_args(args or {})  # its keys are the stored ones: dump_args refuses others
        context_text = self._context_text(key, request.context)
        dedupe_key, order_key, parent_id = request.dedupe_key, request.order_key, request.parent_id
        if dedupe_key is not None and not storable(dedupe_key):
            raise InvalidArguments(f"task {key!r}: dedupe_key {STORABLE_RULE}")
        if order_key is not None and not storable(order_key):
            raise InvalidArguments(f"task {key!r}: order_key {STORABLE_RULE}")
        concurrency_key = request.concurrency_key
        if concurrency_key is None and definition.concurrency_key is not None:
            concurrency_key = concurrency_key_value(_argument(definition, definition.concurrency_key, args or {}))
        if concurrency_key is not None and not storable(concurrency_key):
            raise InvalidArguments(f"task {key!r}: concurrency_key {STORABLE_RULE}")
        if parent_id is not None:
            _check(integer(parent_id, 1, 2**63 - 1), key, "parent_id must be a task id")
        run_at, delay = request.run_at, request.delay
        if run_at is not None:
            if delay is not None:
                raise InvalidArguments(f"task {key!r}: give delay or run_at, not both")
            return NewTask(key, queue, priority, args_text, context_text, max_attempts, run_at=_utc(key, run_at),
                           dedupe_key=dedupe_key, order_key=order_key, parent_id=parent_id,
                           concurrency_key=concurrency_key)
        return NewTask(key, queue, priority, args_text, context_text, max_attempts,
                       delay=0.0 if delay is None else _seconds(key, delay), dedupe_key=dedupe_key,
                       order_key=order_key, parent_id=parent_id, concurrency_key=concurrency_key)

    def _options(self, key: str, request: TaskRequest) -> tuple[TaskDefinition, int, int, str]:
        """The handler's definition, and the request's priority, max_attempts and queue (or the
        definition's), checked."""
        definition = self.runtime.plugins.registry.get(key)
        priority = definition.priority if request.priority is None else request.priority
        max_attempts = definition.max_attempts if request.max_attempts is None else request.max_attempts
        queue = definition.queue if request.queue is None else request.queue
        _check(integer(priority, -INT_LIMIT, INT_LIMIT - 1), key, "priority must be an integer that fits 32 bits")
        _check(integer(max_attempts, 1, INT_LIMIT - 1), key, "max_attempts must be an integer from 1 to 2**31 - 1")
        _check(storable(queue), key, f"queue {STORABLE_RULE}")
        return definition, priority, max_attempts, queue

    def _context_text(self, key: str, context: Any) -> str | None:
        """The row's context as JSON: the captured context with the request's own on top."""
        if context is not None:
            merged = {**self.captured, **_mapping(key, context)}
            return _bounded(self.runtime, key, merged, "context") if merged else None
        if key not in self.captured_text:
            self.captured_text[key] = _bounded(self.runtime, key, self.captured, "context") if self.captured else None
        return self.captured_text[key]


def _seconds(key: str, delay: Any) -> float:
    """A delay in seconds, checked: a number or a timedelta, from 0 to `MAX_DELAY`."""
    seconds = delay.total_seconds() if isinstance(delay, dt.timedelta) else delay
    # a chained comparison, not math.isfinite: that raises on an int too large for a float
    _check(isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and 0 <= seconds <= MAX_DELAY,
           key, "delay must be a number of seconds from 0 to 100 years")
    return float(seconds)


def _utc(key: str, run_at: Any) -> dt.datetime:
    if not isinstance(run_at, dt.datetime) or run_at.tzinfo is None:
        raise InvalidArguments(f"task {key!r}: run_at must be a timezone-aware datetime (a naive one is ambiguous)")
    try:
        return run_at.astimezone(dt.timezone.utc)
    except OverflowError:
        raise InvalidArguments(f"task {key!r}: run_at is outside the years 1 to 9999 in UTC") from None


def _bounded(runtime: Runtime, key: str, value: Mapping[str, Any] | None, what: str) -> str:
    """`dump_args`, refusing arguments (or a context) nested deeper than ``args_max_depth`` or
    longer than ``args_max_bytes`` as JSON: every page and process that reads the row pays for them."""
    settings = runtime.settings
    text = dump_args(key, value, what)  # first: it names what JSON cannot carry (a cycle, say)
    # only text with a "[" or a second "{" can hold a nested list or dict (a string's brackets
    # also send a value to the walk, which then finds it flat)
    if ("[" in text or text.find("{", 1) != -1) and nested_deeper(value or {}, settings.args_max_depth):
        raise InvalidArguments(f"{what} for task {key!r} nest lists and dicts more than {settings.args_max_depth} "
                               "levels deep (setting args_max_depth, GTA_ARGS_MAX_DEPTH)")
    if len(text) > settings.args_max_bytes:  # ASCII: json.dumps escapes everything else
        raise InvalidArguments(f"{what} for task {key!r} are {len(text):,} bytes as JSON, over the limit of "
                               f"{settings.args_max_bytes:,} (setting args_max_bytes, GTA_ARGS_MAX_BYTES)")
    return text


def nested_deeper(value: Mapping[str, Any], limit: int) -> bool:
    """Whether dicts and lists nest more than ``limit`` levels in ``value`` (itself level 1),
    found level by level without recursion, so at most ``limit`` levels are walked."""
    level = [item for item in value.values() if isinstance(item, (dict, list))]
    for _ in range(limit - 1):
        if not level:
            return False
        level = [child for item in level for child in (item.values() if isinstance(item, dict) else item)
                 if isinstance(child, (dict, list))]
    return bool(level)


def _argument(definition: TaskDefinition, name: str, args: Mapping[str, Any]) -> Any:
    """The value of the handler's argument ``name``: given, or its default."""
    if name in args:
        return args[name]
    parameter = definition.signature.parameters.get(name)
    return None if parameter is None or parameter.default is parameter.empty else parameter.default


def _check(ok: bool, key: str, rule: str) -> None:
    if not ok:
        raise InvalidArguments(f"task {key!r}: {rule}")


def integer(value: Any, low: int, high: int) -> bool:
    """An int (not a bool) from ``low`` to ``high``: what an INTEGER or BIGINT column takes."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def storable(value: Any) -> bool:
    """A string every database keeps unchanged and distinct in a VARCHAR(191) column:
    PostgreSQL refuses NUL, no driver encodes a lone surrogate, and MariaDB's PAD SPACE
    collation compares 'a ' equal to 'a' (one dedupe key, one queue, one FIFO for both)."""
    if not isinstance(value, str) or not 0 < len(value) <= 191 or "\x00" in value or value.endswith(" "):
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _mapping(key: str, context: Any) -> Mapping[str, Any]:
    if context is None:
        return {}
    if not isinstance(context, Mapping):
        raise InvalidArguments(f"context for task {key!r} must be a dict, not {type(context).__name__}")
    return context
