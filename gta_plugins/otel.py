"""OpenTelemetry tracing: one trace from the request that submits a task to every attempt that runs it.

The built-in ``otel`` plugin. It does something only where ``opentelemetry-api`` is importable
(``pip install 'gta[otel]'``) *and* a tracer provider is configured, the standard way
(``opentelemetry-instrument gta-supervisor …`` with ``OTEL_*`` variables, or the application's
own set-up); elsewhere it costs nothing per task. docs/tracing.md describes the trace model.

- **Submit** (`gta_submit`): a PRODUCER span ``send {key}`` around the insert, current while
  the statement runs; for a batch, one ``send`` and a PRODUCER ``create {key}`` span per task.
  Each task's creation context (W3C ``traceparent``/``tracestate``, and ``baggage``) goes into
  its ``context`` column, in the caller's transaction: a rolled-back submit leaves no row, so
  no attempt ever refers to its span. A ``traceparent`` the caller put in ``context=`` is kept.
- **Attempt** (`gta_attempt`): a CONSUMER span ``process {key}``, current while the handler
  runs, so its own spans and the tasks it submits nest under it. It links to the task's
  creation context (the messaging conventions' rule), or, with ``--otel-span-relation
  parent-first``, is its child on the first attempt of a task submitted alone and due at once
  (delayed, retried and fan-out runs still link). Its status, ``error.type`` and exception
  event follow the outcome rule's outcome.
- **Supervisor** (`gta_settle`): a ``rescue`` or ``settle`` span when the rescuer or the janitor
  ended attempts whose worker could not, with a link to each task's creation context.
- **Worker exit** (`gta_worker_stopped`): the tracer provider is flushed before a worker exits
  (a graceful stop or a recycle), since a worker ends with ``os._exit``.

Nothing is imported from OpenTelemetry when this module is: the ``otel`` entry point registers
`plugin`, whose hooks exist only if ``opentelemetry-api`` is installed, and which imports it
at its first hook call.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os
import sys
import threading
import time
from contextlib import AbstractContextManager
from types import SimpleNamespace, TracebackType
from typing import TYPE_CHECKING, Any

from gta_core import hookimpl
from gta_core.outcomes import Action, one_line

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

    from gta_core.scopes import Attempt, Submission
    from gta_core.tasks import TaskRecord

log = logging.getLogger("gta.otel")

#: the instrumentation scope GTA's spans come from
SCOPE = "gta"
#: how long a stopping worker waits for its spans to be exported
FLUSH_MILLIS = 5000
#: the context key that says a task's creation was not an immediate single submit (its value:
#: ``delayed`` or ``fan-out``): ``parent-first`` links such tasks instead of parenting them
LINK_HINT = "otel.link"
TRACEPARENT = "traceparent"
#: the variable by which OpenTelemetry's API loads a tracer provider of its own accord
PROVIDER_VARIABLE = "OTEL_PYTHON_TRACER_PROVIDER"

# attribute names: the messaging semantic conventions' where they fit, GTA's own otherwise
SYSTEM, OPERATION_TYPE, OPERATION_NAME = "messaging.system", "messaging.operation.type", "messaging.operation.name"
DESTINATION, MESSAGE_ID, BATCH = "messaging.destination.name", "messaging.message.id", "messaging.batch.message_count"
CLIENT_ID, ERROR_TYPE = "messaging.client.id", "error.type"
KEY, ATTEMPT, MAX_ATTEMPTS = "gta.task.key", "gta.task.attempt", "gta.task.max_attempts"
WAIT, OUTCOME, RETRY_DELAY = "gta.task.wait_seconds", "gta.task.outcome", "gta.task.retry_delay_seconds"
TASK_IDS, WORKER, DEFERRED = "gta.task.ids", "gta.worker.id", "gta.submit.deferred"
#: what a write the fence refused makes of an attempt, as its ``error.type`` when the handler raised nothing
REFUSED = {"lost": "lease_lost", "cancelled": "cancelled"}


def installed() -> bool:
    """Whether ``opentelemetry-api`` can be imported (found without importing it)."""
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):
        return False


@functools.cache
def api() -> Any:
    """The parts of OpenTelemetry's API the plugin uses, imported on first use; None if that
    import fails (logged once)."""
    try:
        from opentelemetry import context, propagate, trace
        from opentelemetry.trace import Link, SpanKind, Status, StatusCode
    except Exception:  # a broken installation must not fail every submit and attempt
        log.warning("opentelemetry-api is installed but cannot be imported; tracing is off", exc_info=True)
        return None
    return SimpleNamespace(context=context, propagate=propagate, trace=trace, Link=Link, SpanKind=SpanKind,
                           Status=Status, StatusCode=StatusCode,
                           unset=(trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def error_type(error: BaseException) -> str:
    """The exception's class as ``error.type``: its name for builtins, module path otherwise."""
    kind = type(error)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def record_error(span: Span, error: BaseException) -> None:
    """Mark ``span`` failed by ``error``: status, ``error.type`` and an exception event."""
    otel = api()
    span.set_attribute(ERROR_TYPE, error_type(error))
    span.record_exception(error)
    span.set_status(otel.Status(otel.StatusCode.ERROR, one_line(error)))


def creation_context(task: TaskRecord) -> tuple[Context, dict[str, str]]:
    """The creation context a task carries (extracted by the configured propagators), and
    the carrier it came from; an empty context for a task submitted without one."""
    try:
        carried = task.decoded_context()
    except Exception:  # a context column written by hand: no creation context, the task still runs
        carried = {}
    carrier = {name: value for name, value in carried.items() if isinstance(value, str)}
    return api().propagate.extract(carrier), carrier


class Tracing:
    """The plugin's hooks and what they share in one process: the tracer, the attempts in
    progress (for the fence's refusals) and each supervisor thread's settlement."""

    def __init__(self) -> None:
        self.cached: tuple[Any, Tracer] | None = None
        #: whether the API may load a provider of its own accord (read once: os.environ is slow per task)
        self.provider_named = PROVIDER_VARIABLE in os.environ
        self.attempts: dict[tuple[int, int], Processing] = {}
        self.local = threading.local()

    def tracer(self) -> Tracer | None:
        """This process's tracer, or None while no tracer provider is configured (then every
        hook returns at once). A process where nothing imported OpenTelemetry's trace API has
        configured none (setting a provider imports it; only ``OTEL_PYTHON_TRACER_PROVIDER``
        names one without), so it is not imported here for nothing."""
        if "opentelemetry.trace" not in sys.modules and not self.provider_named:
            return None
        otel = api()
        if otel is None:
            return None
        provider = otel.trace.get_tracer_provider()
        if isinstance(provider, otel.unset):
            return None
        cached = self.cached
        if cached is None or cached[0] is not provider:
            cached = self.cached = (provider, provider.get_tracer(SCOPE))
        return cached[1]

    @hookimpl
    def gta_submit(self, submission: Submission) -> AbstractContextManager[None] | None:
        tracer = self.tracer()
        return Sending(tracer, submission) if tracer is not None else None

    @hookimpl
    def gta_attempt(self, attempt: Attempt, gta: Any) -> AbstractContextManager[None] | None:
        tracer = self.tracer()
        if tracer is None:
            return None
        return Processing(self, tracer, attempt, parent_first=gta.settings.otel_span_relation == "parent-first")

    @hookimpl
    def gta_settle(self, kind: str, worker: str | None) -> AbstractContextManager[None] | None:
        tracer = self.tracer()
        return Settling(self, tracer, kind, worker) if tracer is not None else None

    @hookimpl
    def gta_task_events(self, event: str, tasks: list[Any], errors: list[BaseException | None],
                        durations: list[float | None]) -> None:
        settling: Settling | None = getattr(self.local, "settling", None)
        if settling is not None:  # the supervisor's thread inside a `gta_settle` scope
            settling.touched.extend(zip([event] * len(tasks), tasks, errors, strict=True))
        elif event in REFUSED and self.attempts:
            for task in tasks:
                processing = self.attempts.get((task.id, task.attempts))
                if processing is not None:
                    processing.refused = event

    @hookimpl
    def gta_worker_stopped(self) -> None:
        if "opentelemetry.trace" not in sys.modules or api() is None:
            return  # nothing was traced here
        flush = getattr(api().trace.get_tracer_provider(), "force_flush", None)
        if flush is not None:
            flush(FLUSH_MILLIS)


class Sending:
    """The ``send`` span of one submit (and a ``create`` span per task of a batch)."""

    def __init__(self, tracer: Tracer, submission: Submission) -> None:
        self.tracer = tracer
        self.submission = submission
        self.creates: list[tuple[int, Span]] = []

    def __enter__(self) -> None:
        otel, submission = api(), self.submission
        tasks = submission.tasks
        keys, queues = {task.key for task in tasks}, {task.queue for task in tasks}
        attributes: dict[str, Any] = {SYSTEM: "gta", OPERATION_TYPE: "send", OPERATION_NAME: "send"}
        if len(keys) == 1:
            attributes[KEY] = next(iter(keys))
        if len(queues) == 1:
            attributes[DESTINATION] = next(iter(queues))
        if len(tasks) > 1:
            attributes[BATCH] = len(tasks)
        if submission.deferred:
            attributes[DEFERRED] = True
        name = f"send {tasks[0].key}" if len(keys) == 1 else "send"
        self.span = self.tracer.start_span(name, kind=otel.SpanKind.PRODUCER, attributes=attributes)
        self.token = otel.context.attach(otel.trace.set_span_in_context(self.span))
        for index, task in enumerate(tasks):
            if TRACEPARENT in submission.context(index):
                continue  # the caller's own creation context is kept, and no create span made
            creation = None
            if len(tasks) > 1:
                create = self.tracer.start_span(f"create {task.key}", kind=otel.SpanKind.PRODUCER, attributes={
                    SYSTEM: "gta", OPERATION_TYPE: "create", OPERATION_NAME: "create", KEY: task.key,
                    DESTINATION: task.queue})
                self.creates.append((index, create))
                creation = otel.trace.set_span_in_context(create)
            carrier: dict[str, str] = {}
            otel.propagate.inject(carrier, context=creation)
            if len(tasks) > 1 or submission.due_later(index):
                carrier[LINK_HINT] = "delayed" if submission.due_later(index) else "fan-out"
            submission.carry(index, carrier)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        ids = self.submission.ids
        if ids is not None and len(ids) == 1:
            self.span.set_attribute(MESSAGE_ID, str(ids[0]))
        for index, create in self.creates:
            if ids is not None:
                create.set_attribute(MESSAGE_ID, str(ids[index]))
            create.end()
        if error is not None:
            record_error(self.span, error)
        api().context.detach(self.token)
        self.span.end()


class Processing:
    """The ``process`` span of one attempt, current while its handler runs."""

    def __init__(self, plugin: Tracing, tracer: Tracer, attempt: Attempt, parent_first: bool) -> None:
        self.plugin = plugin
        self.tracer = tracer
        self.attempt = attempt
        self.parent_first = parent_first
        #: ``lost`` or ``cancelled`` once the fence refused this attempt's outcome write
        self.refused: str | None = None

    def __enter__(self) -> None:
        otel, task = api(), self.attempt.task
        creation, carrier = creation_context(task)
        created = otel.trace.get_current_span(creation).get_span_context()
        links = []
        if created.is_valid and self.parent_first and task.attempts == 1 and LINK_HINT not in carrier:
            parent = creation  # the first immediate attempt: a child of the submit
        else:
            parent = otel.trace.set_span_in_context(otel.trace.INVALID_SPAN, creation)  # a root, with the baggage
            if created.is_valid:
                links.append(otel.Link(created))
        attributes: dict[str, Any] = {
            SYSTEM: "gta", OPERATION_TYPE: "process", OPERATION_NAME: "process", DESTINATION: task.queue,
            MESSAGE_ID: str(task.id), CLIENT_ID: self.attempt.worker, KEY: task.key, ATTEMPT: task.attempts,
            MAX_ATTEMPTS: task.max_attempts}
        if task.run_at is not None:
            attributes[WAIT] = max(0.0, time.time() - task.run_at.timestamp())
        self.span = self.tracer.start_span(f"process {task.key}", context=parent, kind=otel.SpanKind.CONSUMER,
                                           links=links, attributes=attributes)
        self.token = otel.context.attach(otel.trace.set_span_in_context(self.span, parent))
        self.plugin.attempts[(task.id, task.attempts)] = self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        task, outcome, span = self.attempt.task, self.attempt.outcome, self.span
        self.plugin.attempts.pop((task.id, task.attempts), None)
        api().context.detach(self.token)
        if outcome is not None:
            span.set_attribute(OUTCOME, outcome.event)
            if outcome.action is Action.RETRY and outcome.delay is not None:
                span.set_attribute(RETRY_DELAY, outcome.delay)
        failure = error if error is not None else outcome.error if outcome is not None else None
        if failure is not None:
            record_error(span, failure)
        if self.refused is not None:
            span.set_attribute(OUTCOME, self.refused)
            if failure is None:
                span.set_attribute(ERROR_TYPE, REFUSED[self.refused])
                otel = api()
                span.set_status(otel.Status(otel.StatusCode.ERROR, f"the outcome was not recorded: {self.refused}"))
        span.end()


class Settling:
    """The supervisor's ``rescue`` or ``settle`` span: made when the scope ends, and only if it
    settled tasks (a rescue round that found nothing leaves no span), linked to each task's
    creation context."""

    def __init__(self, plugin: Tracing, tracer: Tracer, kind: str, worker: str | None) -> None:
        self.plugin = plugin
        self.tracer = tracer
        self.kind = kind
        self.worker = worker
        self.touched: list[tuple[str, Any, BaseException | None]] = []

    def __enter__(self) -> None:
        self.start = time.time_ns()
        self.plugin.local.settling = self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.plugin.local.settling = None
        if not self.touched:
            return
        otel = api()
        links = []
        for event, task, cause in self.touched:
            created = otel.trace.get_current_span(creation_context(task)[0]).get_span_context()
            if created.is_valid:
                links.append(otel.Link(created, attributes=self._link_attributes(event, task, cause)))
        name = "rescue" if self.kind == "rescue" else "settle"
        attributes: dict[str, Any] = {
            SYSTEM: "gta", OPERATION_TYPE: "settle", OPERATION_NAME: name, BATCH: len(self.touched),
            TASK_IDS: [task.id for _, task, _ in self.touched]}
        if self.worker is not None:
            attributes[WORKER] = self.worker
        span = self.tracer.start_span(name, context=otel.context.Context(), links=links, attributes=attributes,
                                      start_time=self.start)
        if error is not None:
            record_error(span, error)
        span.end()

    @staticmethod
    def _link_attributes(event: str, task: Any, cause: BaseException | None) -> dict[str, Any]:
        """What became of one task's attempt, on the link to its creation context."""
        attributes: dict[str, Any] = {MESSAGE_ID: str(task.id), KEY: task.key, ATTEMPT: task.attempts}
        if event == "rescued":  # an expired lease: pending again, or failed when the policy gave up
            attributes[OUTCOME] = "retried" if task.status == "pending" else "failed"
            attributes[ERROR_TYPE] = "gta_core.errors.LeaseExpired"
        else:
            attributes[OUTCOME] = event
            if cause is not None:
                attributes[ERROR_TYPE] = error_type(cause)
        return attributes


#: what the ``otel`` entry point registers: the hooks where ``opentelemetry-api`` is installed,
#: an object without any elsewhere (so that a process without OpenTelemetry pays no hook call)
plugin: object = Tracing() if installed() else SimpleNamespace()
