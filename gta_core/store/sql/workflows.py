"""The statements of results, groups and chains (`WorkflowStatements`), per dialect.

A group is a row of ``<table>_groups`` holding how many of its members are not final yet
(``remaining``) and the id of its callback task, which waits in the task table with status
``waiting`` (never leased: leasing takes ``pending`` rows only). Each member's final write
decrements ``remaining`` in the same transaction; the row lock of that ``UPDATE`` serializes
members finishing at once on two hosts, so exactly one transaction takes it to zero, and that
one releases the callback (`store.workflows`). Built once per (dialect, table), as `sql`.
"""
from __future__ import annotations

import functools

from .dialects import DIALECTS, Dialect
from .statements import LEASE_FENCE, Template, statements

#: the status of a callback task whose group (or previous chain step) is not final yet
WAITING = "waiting"
#: statuses a task can leave for a final one (a waiting callback can be cancelled)
UNFINISHED = ("pending", "running", WAITING)


class WorkflowStatements:
    """Statements of results and groups for one table on one dialect; see `workflow_statements`."""

    def __init__(self, dialect: Dialect, table: str) -> None:
        d, t, fx = dialect, table, dialect.fix
        g = f"{t}_groups"
        self.groups_table = g
        lock = " FOR UPDATE" if d.name in ("postgres", "mysql") else ""  # SQLite: BEGIN IMMEDIATE
        # ``kind``: 'group' (the callback gets every member's outcome) or 'chain' (the next step
        # gets the previous one's result, and is cancelled when that did not succeed)
        self.create_groups = (f"CREATE TABLE {g} ({d.id_column}, kind VARCHAR(16) NOT NULL, "
                              f"total INTEGER NOT NULL, remaining INTEGER NOT NULL, callback_id BIGINT NULL, "
                              f"created_at {d.timestamp} NOT NULL, finished_at {d.timestamp} NULL){d.table_options}")
        insert_group = f"INSERT INTO {g} (kind, total, remaining, created_at) VALUES (?, ?, ?, {d.now})"
        self.insert_group = fx(insert_group + (" RETURNING id" if d.insert_returns_ids else ""))
        self.insert_group_plain = fx(insert_group)
        self.set_callback = fx(f"UPDATE {g} SET callback_id = ? WHERE id = ?")
        self.join_group = Template("UPDATE " + t + " SET group_id = ? WHERE id IN ({ids})")
        self.hold = fx(f"UPDATE {t} SET status = '{WAITING}' WHERE id = ? AND status = 'pending'")

        # -- a member's final write ----------------------------------------------------------
        # Parameters: count, count, group. ``finished_at`` is set first, from the old
        # ``remaining`` (MySQL assigns left to right with the new values); a group already
        # finished (a member re-run by an operator after its callback was released) is left alone.
        self.count_final = fx(f"UPDATE {g} SET finished_at = CASE WHEN remaining <= ? THEN {d.now} ELSE NULL END, "
                              "remaining = remaining - ? WHERE id = ? AND remaining > 0")
        self.group_after = fx(f"SELECT remaining, callback_id, kind FROM {g} WHERE id = ?")
        self.outcomes = fx(f"SELECT id, status, result, last_error FROM {t} WHERE group_id = ? ORDER BY id")
        self.waiting_callback = fx(f"SELECT args, group_id FROM {t} WHERE id = ? AND status = '{WAITING}'{lock}")
        self.release_callback = fx(f"UPDATE {t} SET status = 'pending', args = ?, run_at = {d.now}, "
                                   f"updated_at = {d.now} WHERE id = ? AND status = '{WAITING}'")
        self.cancel_callback = fx(f"UPDATE {t} SET status = 'cancelled', finished_at = {d.now}, updated_at = {d.now}, "
                                  f"last_error = ? WHERE id = ? AND status = '{WAITING}'")
        self.queue_of = fx(f"SELECT queue FROM {t} WHERE id = ?")

        # -- results ---------------------------------------------------------------------------
        engine = statements(d.name, t)
        done = f" RETURNING {engine.notify_done}" if engine.notify_done else ""
        self.complete_with_result = fx(
            f"UPDATE {t} SET status = 'succeeded', result = ?, finished_at = {d.now}, updated_at = {d.now}, "
            f"lease_expires_at = NULL WHERE {LEASE_FENCE}{done}")
        self.result = fx(f"SELECT status, result, last_error FROM {t} WHERE id = ?")
        #: PostgreSQL's channel for final writes (`gta_core.wait` listens on it)
        self.done_channel = engine.done_channel

        # -- cancel, re-run, cleanup -------------------------------------------------------------
        # cancel: lock the unfinished members first, so a worker's final write of the same row
        # waits (and then matches nothing) instead of counting it a second time
        self.unfinished_members = Template(
            f"SELECT id, group_id FROM {t} WHERE id IN ({{ids}}) AND group_id IS NOT NULL "
            f"AND status IN ('pending', 'running', '{WAITING}'){lock}"
        )
        self.cancel_waiting = Template(
            f"UPDATE {t} SET status = 'cancelled', finished_at = {d.now}, updated_at = {d.now}, "
            f"last_error = ? WHERE status = '{WAITING}' AND id IN ({{ids}})" + done
        )
        # `gta retry` of a final member whose group is not finished: it is unfinished again
        self.rerun_members = (Template(f"SELECT group_id FROM {t} WHERE id IN ({{ids}}) AND group_id IS NOT NULL "
                              "AND status IN ('failed', 'cancelled')"))
        self.count_rerun = fx(f"UPDATE {g} SET remaining = remaining + 1 WHERE id = ? AND remaining > 0")
        # cleanup keeps the members of a group whose callback was not released yet (it reads
        # their outcomes then), and deletes finished groups past the retention
        self.open_group_member = f"group_id IN (SELECT id FROM {g} WHERE remaining > 0)"
        self.delete_finished_groups = fx(f"DELETE FROM {g} WHERE remaining <= 0 AND finished_at < {d.now_plus()}")


@functools.cache
def workflow_statements(dialect_name: str, table: str) -> WorkflowStatements:
    return WorkflowStatements(DIALECTS[dialect_name], table)
