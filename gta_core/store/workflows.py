"""Results, groups and chains (the queries), mixed into `TaskStore`.

Every method here runs in a transaction the caller holds open: a group is created in the
transaction that submits it (or records its parent's success), and a member is counted in the
transaction of its own final write, whichever path makes it (a worker's success or failure,
the janitor, rescue, cancel). That is what makes the callback exactly-once: the member's final
write and its count commit together or not at all, and the groups row's lock orders members
that finish at once, so one transaction alone takes ``remaining`` to zero and releases the
callback (`count_final`). Tasks outside groups never reach this module: the fast path of a
plain task pays nothing for it.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .base import StoreBase
from .inserts import NewTask
from .rows import placeholders
from .sql.workflows import WorkflowStatements, workflow_statements

#: ids per ``IN`` list when joining members to their group
CHUNK = 500


@dataclasses.dataclass(frozen=True)
class PreparedWorkflow:
    """A checked group or chain, ready to insert (`gta_core.workflows`).

    ``kind`` 'group': ``tasks`` are the members and ``callback`` runs once all are final.
    ``kind`` 'chain': ``tasks`` are the steps in order, ``callback`` is None.
    """

    kind: str
    tasks: Sequence[NewTask]
    callback: NewTask | None = None

    def with_parent(self, parent_id: int) -> PreparedWorkflow:
        """The same, every row a child of ``parent_id`` (a group a handler created)."""
        def child(row: NewTask) -> NewTask:
            return dataclasses.replace(row, parent_id=parent_id)
        return PreparedWorkflow(self.kind, [child(row) for row in self.tasks],
                                None if self.callback is None else child(self.callback))


@dataclasses.dataclass(frozen=True)
class Workflow:
    """What was created: the task ids (members or steps, in order), the callback's id (a
    group's), and the groups rows linking them (one per chain link)."""

    kind: str
    ids: list[int]
    callback: int | None
    groups: list[int]


class WorkflowQueries(StoreBase):
    """What results, groups and chains ask of the tables."""

    insert: Callable[[Sequence[NewTask]], list[int]]  # from `InsertQueries`

    @property
    def wf(self) -> WorkflowStatements:
        return workflow_statements(self.dialect, self.table)

    # -- creating ----------------------------------------------------------------------------
    def insert_workflow(self, prepared: PreparedWorkflow) -> Workflow:
        """Insert a group's members and callback, or a chain's steps, and link them; in the
        transaction open on this store's connection (submit's, or the parent's success)."""
        if prepared.kind == "group":
            assert prepared.callback is not None
            callback_id, *ids = self.insert([prepared.callback, *prepared.tasks])
            groups = [self._link("group", ids, callback_id)] if ids else []  # no member: runs at once
            return Workflow("group", ids, callback_id, groups)
        ids = self.insert(list(prepared.tasks))
        groups = [self._link("chain", [step], following) for step, following in zip(ids, ids[1:], strict=False)]
        return Workflow("chain", ids, None, groups)

    def _link(self, kind: str, members: Sequence[int], callback_id: int) -> int:
        """A groups row for ``members``, each member joined to it, the callback held waiting."""
        wf = self.wf
        params = (kind, len(members), len(members))
        if self._d.insert_returns_ids:
            group_id = int(self._execute(wf.insert_group, params).fetchone()[0])
        else:
            group_id = int(self._execute(wf.insert_group_plain, params).lastrowid)
        for start in range(0, len(members), CHUNK):
            chunk = members[start:start + CHUNK]
            self._execute(self._d.fix(wf.join_group.fill(ids=placeholders(len(chunk)))), (group_id, *chunk))
        self._execute(wf.set_callback, (callback_id, group_id))
        self._execute(wf.hold, (callback_id,))
        return group_id

    # -- a member's final write ------------------------------------------------------------
    def count_final(self, counts: Mapping[int, int]) -> list[int]:
        """Count members that just became final (group id → how many), in the transaction of
        their final write; release (or, for a broken chain, cancel) the callback of every group
        this finishes. Returns the callbacks released."""
        released: list[int] = []
        todo = sorted(counts.items())  # one lock order for every transaction: no deadlock between two
        while todo:
            group_id, count = todo.pop(0)
            if not self._execute(self.wf.count_final, (count, count, group_id)).rowcount:
                continue  # finished already: a member an operator re-ran after the callback was released
            remaining, callback_id, kind = self._execute(self.wf.group_after, (group_id,)).fetchone()
            if remaining > 0 or callback_id is None:
                continue
            ran, cancelled_in = self._release(group_id, int(callback_id), kind)
            if ran:
                released.append(int(callback_id))
            elif cancelled_in is not None:  # a chain step cancelled: it is final, count it in its own group
                todo.append((cancelled_in, 1))
        return released

    def _release(self, group_id: int, callback_id: int, kind: str) -> tuple[bool, int | None]:
        """Hand the group's outcomes to its waiting callback and make it due: (True, None).
        (False, None) when it was no longer waiting (cancelled). For a chain whose step did not
        succeed the callback is cancelled instead: (False, the group it is a member of)."""
        wf = self.wf
        row = self._execute(wf.waiting_callback, (callback_id,)).fetchone()
        if row is None:
            return False, None
        args_text, own_group = row
        outcomes = [_outcome(*member) for member in self._execute(wf.outcomes, (group_id,)).fetchall()]
        args = json.loads(args_text)
        if kind == "chain":
            previous = outcomes[0] if outcomes else {"id": None, "status": "deleted"}
            if previous["status"] != "succeeded":
                reason = f"cancelled: the previous step of its chain, task {previous['id']}, ended {previous['status']}"
                self._execute(wf.cancel_callback, (reason, callback_id))
                self._notify_done()
                return False, None if own_group is None else int(own_group)
            args["previous"] = previous["result"]
        else:
            args["group"] = outcomes
        self._execute(wf.release_callback, (json.dumps(args, separators=(",", ":")), callback_id))
        if self.dialect == "postgres":
            (queue,) = self._execute(wf.queue_of, (callback_id,)).fetchone()
            self._execute(self.sql.notify, (f"gta_{self.table}", queue))
        return True, None

    def _notify_done(self) -> None:
        if self.dialect == "postgres":
            self._execute(self.sql.notify, (self.wf.done_channel, ""))

    def members_of(self, tasks: Iterable[Any]) -> dict[int, int]:
        """Group id → how many of ``tasks`` (records with ``group_id``) are members of it."""
        counts: dict[int, int] = {}
        for task in tasks:
            if task.group_id is not None:
                counts[task.group_id] = counts.get(task.group_id, 0) + 1
        return counts

    # -- cancel and re-run -------------------------------------------------------------------
    def lock_unfinished_members(self, ids: Sequence[int]) -> dict[int, int]:
        """Lock the unfinished group members among ``ids`` (before cancel marks them): group id
        → how many, to count once they are cancelled."""
        counts: dict[int, int] = {}
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]
            statement = self._d.fix(self.wf.unfinished_members.fill(ids=placeholders(len(chunk))))
            for _, group_id in self._execute(statement, chunk).fetchall():
                counts[int(group_id)] = counts.get(int(group_id), 0) + 1
        return counts

    def cancel_waiting(self, ids: Sequence[int], reason: str) -> int:
        """Cancel the waiting callbacks among ``ids`` (they will then never run)."""
        statement = self._d.fix(self.wf.cancel_waiting.fill(ids=placeholders(len(ids))))
        return int(self._execute(statement, (reason, *ids)).rowcount)

    def reopen_groups(self, ids: Sequence[int]) -> None:
        """Before ``gta retry`` puts final tasks back to pending: each member among them whose
        group is not finished is unfinished again (a finished group stays finished)."""
        statement = self._d.fix(self.wf.rerun_members.fill(ids=placeholders(len(ids))))
        for (group_id,) in self._execute(statement, ids).fetchall():
            self._execute(self.wf.count_rerun, (group_id,))

    # -- results -------------------------------------------------------------------------------
    def result_row(self, task_id: int) -> tuple[str, str | None, str | None] | None:
        """(status, stored result as JSON text, last_error), or None when no row has the id."""
        row = self._execute(self.wf.result, (task_id,)).fetchone()
        return None if row is None else (row[0], row[1], row[2])


def _outcome(task_id: int, status: str, result: str | None, error: str | None) -> dict[str, Any]:
    """A member's outcome as its callback receives it."""
    outcome: dict[str, Any] = {"id": int(task_id), "status": status,
                               "result": json.loads(result) if result is not None else None}
    if status != "succeeded":
        outcome["error"] = (error or status).strip().splitlines()[0] if (error or status).strip() else status
    return outcome
