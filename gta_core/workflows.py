"""Groups (fan-out / fan-in) and chains: ``gta_core.group`` and ``gta_core.chain``.

``group(tx, members, on_complete=TaskRequest(...))`` inserts the members and a callback task in
the caller's transaction; the callback runs once, when every member is final (succeeded, failed
or cancelled), with the keyword argument ``group``: each member's ``{"id", "status", "result"}``
(and ``"error"``, the first line of its last error, when it did not succeed), in id order.

``chain(tx, [a, b, c])`` runs ``a``, then ``b`` with the keyword argument ``previous`` set to
``a``'s result, then ``c`` with ``b``'s. A step that does not succeed cancels the rest of the
chain. A chain is groups of one member each, linked: the same mechanism, the same guarantees.

Inside a handler, ``ctx.group(...)`` and ``ctx.chain(...)`` check the requests at once and
create them with the handler's success, as ``ctx.submit`` does for children.

No loop polls a group: each member's final write counts it in the same transaction
(`store.workflows.WorkflowQueries.count_final`), and the one that finishes the group releases
the callback. See docs/workflows.md.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from . import handles
from .errors import InvalidArguments
from .handles.api_errors import gta_errors
from .runtime import Runtime, get_runtime
from .scopes import Submission, announce, scope
from .store.inserts import NewTask
from .store.workflows import PreparedWorkflow, Workflow
from .validation import TaskRequest, capture_context, prepare

#: the keyword argument a group's callback receives the members' outcomes in
GROUP_ARGUMENT = "group"
#: the keyword argument a chain's step (after the first) receives the previous step's result in
PREVIOUS_ARGUMENT = "previous"

Request = TaskRequest | tuple[str, Mapping[str, Any] | None]


@gta_errors
def group(db_tx: Any, members: Iterable[Request], on_complete: Request) -> Workflow:
    """Insert ``members`` and their callback ``on_complete`` in the transaction of ``db_tx``
    (a handle as for `submit`); the callback runs once every member is final, with the keyword
    argument ``group`` (the members' outcomes). Returns the ids (`Workflow`)."""
    runtime = get_runtime()
    handle = handles.resolve(db_tx, runtime)
    prepared = prepare_group(runtime, members, on_complete, capture_context(runtime))
    return _create(runtime, handle, prepared)


@gta_errors
def chain(db_tx: Any, steps: Iterable[Request]) -> Workflow:
    """Insert ``steps`` in the transaction of ``db_tx``; each runs once the previous one
    succeeded, with the keyword argument ``previous`` (its result); a step that fails or is
    cancelled cancels the ones after it. Returns the ids (`Workflow`)."""
    runtime = get_runtime()
    handle = handles.resolve(db_tx, runtime)
    prepared = prepare_chain(runtime, steps, capture_context(runtime))
    return _create(runtime, handle, prepared)


def _create(runtime: Runtime, handle: handles.Handle, prepared: PreparedWorkflow) -> Workflow:
    """Insert a checked group or chain through ``handle``, inside the plugins' submit scope."""
    submission = _submission(prepared)
    with scope(runtime.plugins, "gta_submit", submission=submission):
        workflow = handle.write(runtime, lambda store: store.insert_workflow(_carried(prepared, submission)))
        submission.written([*workflow.ids, *([] if workflow.callback is None else [workflow.callback])])
        return workflow


def announce_deferred(runtime: Runtime, prepared: PreparedWorkflow) -> PreparedWorkflow:
    """A group or chain a running handler created, after the plugins' submit scope saw it
    (`Submission.deferred`: it is written with the handler's success)."""
    submission = _submission(prepared, deferred=True)
    announce(runtime.plugins, submission)
    return _carried(prepared, submission)


def _submission(prepared: PreparedWorkflow, deferred: bool = False) -> Submission:
    """A workflow's rows as one `Submission`: members (or steps) in order, then a group's
    callback; the callback and a chain's later steps wait for the others (``held``)."""
    count = len(prepared.tasks)
    rows = [*prepared.tasks, *([] if prepared.callback is None else [prepared.callback])]
    held = range(count, count + 1) if prepared.kind == "group" else range(1, count)
    return Submission(rows, deferred=deferred, held=frozenset(held))


def _carried(prepared: PreparedWorkflow, submission: Submission) -> PreparedWorkflow:
    """``prepared`` with the rows as the submit scope left them (with what plugins carry)."""
    count = len(prepared.tasks)
    callback = None if prepared.callback is None else submission.tasks[count]
    return PreparedWorkflow(prepared.kind, submission.tasks[:count], callback)


def prepare_group(runtime: Runtime, members: Iterable[Request], on_complete: Request,
                  captured: Mapping[str, Any]) -> PreparedWorkflow:
    """Check a group completely (as submit checks a task) before anything is written."""
    _refuse_eager(runtime)
    rows = [_prepare(runtime, _request(item, "member"), captured) for item in members]
    callback = _prepare(runtime, _request(on_complete, "on_complete"), captured, GROUP_ARGUMENT)
    return PreparedWorkflow("group", rows, callback)


def prepare_chain(runtime: Runtime, steps: Iterable[Request], captured: Mapping[str, Any]) -> PreparedWorkflow:
    """Check a chain completely before anything is written."""
    _refuse_eager(runtime)
    requests = [_request(item, "step") for item in steps]
    if not requests:
        raise InvalidArguments("a chain needs at least one step")
    rows = [_prepare(runtime, request, captured, PREVIOUS_ARGUMENT if index else None)
            for index, request in enumerate(requests)]
    return PreparedWorkflow("chain", rows)


def _request(item: Any, what: str) -> TaskRequest:
    if isinstance(item, TaskRequest):
        return item
    if isinstance(item, tuple) and 1 <= len(item) <= 2:
        return TaskRequest(*item)
    raise InvalidArguments(f"a group's or chain's {what} must be a TaskRequest or a (key, args) tuple, "
                           f"not {type(item).__name__}")


def _prepare(runtime: Runtime, request: TaskRequest, captured: Mapping[str, Any],
             injected: str | None = None) -> NewTask:
    """`prepare`, refusing what a group cannot keep: a dedupe key (the id of another task's row
    would come back and be linked), a ``clean_succeeded`` task (its outcome would be deleted
    before the callback reads it). ``injected``: the argument GTA fills in when it releases the
    task; it must be free in the request and accepted by the handler."""
    if request.dedupe_key is not None:
        raise InvalidArguments(f"task {request.key!r}: tasks of a group or chain cannot have a dedupe_key")
    definition = runtime.plugins.registry.get(request.key) if isinstance(request.key, str) else None
    if definition is not None and definition.clean_succeeded:
        raise InvalidArguments(f"task {request.key!r} is clean_succeeded: its row, and so its outcome, would be "
                               "deleted before its group's callback could read it")
    if injected is not None:
        args = dict(request.args or {})
        if injected in args:
            raise InvalidArguments(f"task {request.key!r}: the argument {injected!r} is filled in by GTA when the "
                                   "task is released; leave it out")
        # stored until the release overwrites it: what a group without members gets at once
        request = dataclasses.replace(request, args={**args, injected: [] if injected == GROUP_ARGUMENT else None})
    return prepare(runtime, request, captured)


def _refuse_eager(runtime: Runtime) -> None:
    if runtime.eager is not None:
        raise InvalidArguments("groups and chains do not run in eager mode (gta_core.testing): test them "
                               "against a database with a supervisor")


__all__ = ["GROUP_ARGUMENT", "PREVIOUS_ARGUMENT", "Workflow", "chain", "group", "prepare_chain", "prepare_group"]
