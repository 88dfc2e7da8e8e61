"""The statements of the attempt log (`AttemptStatements`), per dialect.

The log is a table of its own, ``<table>_attempts``, one row per entry of a task: an attempt
that ended otherwise than in a plain success (retried, failed, timed out, worker died, rescued,
cancelled, released unrun) or an operator's action (an operator retry, a cancel). Its key is
(task id, entry number): the entries of one task sit together, numbered 1, 2, … in the order
they were written. Every entry is written in the transaction of the task-row write it
describes, after that write took the row's lock, so the entries of one task never race each
other and the next number is read from the log itself. A task's current or final attempt is
not written here: the task row holds it (`gta_core.attempts` reads both). Built once per
(dialect, table), as `sql`.
"""
from __future__ import annotations

import functools

from .dialects import DIALECTS, Dialect
from .statements import LEASE_FENCE, Template

#: the columns of an entry, in the order every statement here writes and reads them
COLUMNS = ("task_id", "seq", "attempt", "outcome", "worker", "started_at", "ended_at", "error_class", "error",
           "traceback", "retry_delay", "actor")


class AttemptStatements:
    """Statements of the attempt log for one table on one dialect; see `attempt_statements`."""

    def __init__(self, dialect: Dialect, table: str) -> None:
        d, t, fx = dialect, table, dialect.fix
        a = f"{t}_attempts"
        self.table = a
        ts, tx = d.timestamp, d.text
        self.create = (f"CREATE TABLE {a} (task_id BIGINT NOT NULL, seq INTEGER NOT NULL, attempt INTEGER NOT NULL, "
                       f"outcome VARCHAR(16) NOT NULL, worker VARCHAR(191) NULL, started_at {ts} NULL, "
                       f"ended_at {ts} NOT NULL, error_class VARCHAR(191) NULL, error {tx} NULL, traceback {tx} NULL, "
                       f"retry_delay DOUBLE PRECISION NULL, actor VARCHAR(191) NULL, "
                       f"PRIMARY KEY (task_id, seq)){d.table_options}")
        columns = ", ".join(COLUMNS)
        #: the task ids and entry numbers an insert wrote, where the database can say (PostgreSQL, SQLite)
        self.returns = d.insert_returns_ids
        returning = " RETURNING task_id, seq" if self.returns else ""

        def next_seq(source: str) -> str:
            last = f"COALESCE((SELECT MAX(p.seq) FROM {a} p WHERE p.task_id = {source}.id), 0) + 1"
            # MySQL/MariaDB: the client learns the number as the statement's insert id
            # (``LAST_INSERT_ID(expr)``), instead of reading it back in a statement of its own
            return f"LAST_INSERT_ID({last})" if d.name == "mysql" else last

        # The entry of one attempt, written after the fenced write that ended it landed (in its
        # transaction, the row locked). The write may have cleared the lease, so the attempt
        # (NULL: the row's) and the worker are given; the start is the row's. Parameters:
        # attempt, outcome, worker, error_class, error, traceback, retry_delay, actor, task id.
        entry = "COALESCE(?, attempts), ?, ?, started_at, " + d.now + ", ?, ?, ?, ?, ?"
        self.log_ended = fx(f"INSERT INTO {a} ({columns}) SELECT id, {next_seq(t)}, {entry} "
                            f"FROM {t} WHERE id = ?{returning}")
        # MySQL/MariaDB: the entry first, by a plain (consistent, unlocking) read of the row the
        # outcome write's fence matches, so that a stale write, which matches nothing, locks
        # nothing: on MariaDB an UPDATE that reads a row by id keeps its lock until the
        # transaction ends even when the row fails its condition, and a writer cut off before
        # its COMMIT would hold the row of the worker that took the task over. Parameters:
        # `log_ended`'s but the last, then the fence's (id, owner, attempt).
        self.log_fenced = fx(f"INSERT INTO {a} ({columns}) SELECT id, {next_seq(t)}, {entry} "
                             f"FROM {t} WHERE {LEASE_FENCE}")
        # PostgreSQL: the fenced write and its entry in one statement (`ended_write`), prepared
        # (planning it cost as much as running it), so its parameters carry their types
        typed = ("COALESCE(?::integer, attempts), ?::varchar, ?::varchar, started_at, " + d.now
                 + ", ?::varchar, ?::text, ?::text, ?::float8, ?::varchar")
        self._ended_entry = (f"INSERT INTO {a} ({columns}) SELECT id, {next_seq('written')}, {typed} "
                             "FROM written RETURNING task_id, seq")
        self._ended_writes: dict[str, str] = {}
        # The entries of many rows, written before the write that changes them, the rows locked
        # by `lock_rows` (so they are what the write will see): each row's own attempt, and its
        # worker and start while running. Parameters: outcome, error, actor, then the ids.
        self.log_rows = (Template(f"INSERT INTO {a} ({columns}) SELECT id, {next_seq(t)}, attempts, ?, "
                         "CASE WHEN status = 'running' THEN lease_owner END, "
                         f"CASE WHEN status = 'running' THEN started_at END, {d.now}, NULL, ?, NULL, NULL, ? "
                         f"FROM {t} WHERE id IN ({{ids}}){returning}"))
        lock = " FOR UPDATE" if d.name in ("postgres", "mysql") else ""  # SQLite: BEGIN IMMEDIATE
        #: the ids among ``{ids}`` that satisfy ``{condition}``, in id order, locked (`lock_rows`)
        #: or read plainly (`rows`)
        self.rows = Template(f"SELECT id FROM {t} WHERE id IN ({{ids}}) AND {{condition}} ORDER BY id")
        self.lock_rows = Template(f"{self.rows}{lock}")
        # MySQL/MariaDB return nothing from an insert: the number of a single entry is its insert id,
        # those of several are read back
        self.last_seqs = Template(f"SELECT task_id, MAX(seq) FROM {a} WHERE task_id IN ({{ids}}) GROUP BY task_id")
        # retention: a task keeps its first and last N entries (parameters: task id, N, last - N)
        self.trim = fx(f"DELETE FROM {a} WHERE task_id = ? AND seq > ? AND seq <= ?")
        self.delete_of = Template(f"DELETE FROM {a} WHERE task_id IN ({{ids}})")
        # A task's entries and its row, read in one statement (one snapshot): the row is the last
        # entry's sequel (its current or final attempt). Parameters: task id, task id.
        self.entries = fx(f"SELECT seq, attempt, outcome, worker, started_at, ended_at, error_class, error, "
                          f"traceback, retry_delay, actor FROM {a} WHERE task_id = ? "
                          f"UNION ALL SELECT NULL, attempts, status, lease_owner, started_at, finished_at, "
                          f"NULL, NULL, NULL, NULL, NULL FROM {t} WHERE id = ?")

        # A success that deletes its row (``clean_succeeded``) takes the row's entries with it, in
        # one statement where the database has one for it. Parameters: the fence's.
        fence = (f"{t}.id = ? AND {t}.lease_owner = ? AND {t}.status = 'running' "
                 f"AND {t}.attempts = COALESCE(?, {t}.attempts)")
        #: SQLite: the entries of a row the fence still holds, deleted before the row itself
        self.entries_of_fenced: str | None = None
        if d.name == "postgres":
            self.complete_and_delete = fx(f"WITH gone AS (DELETE FROM {t} WHERE {fence} RETURNING id), "
                                          f"entries AS (DELETE FROM {a} WHERE task_id IN (SELECT id FROM gone)) "
                                          "SELECT id FROM gone")
        elif d.name == "mysql":
            self.complete_and_delete = fx(f"DELETE {t}, {a} FROM {t} LEFT JOIN {a} ON {a}.task_id = {t}.id "
                                          f"WHERE {fence}")
        else:  # SQLite: the entries first, while the fence still holds, in the same transaction
            self.complete_and_delete = fx(f"DELETE FROM {t} WHERE {fence}")
            self.entries_of_fenced = fx(f"DELETE FROM {a} WHERE task_id = ? AND EXISTS "
                                        f"(SELECT 1 FROM {t} WHERE {fence})")

    def ended_write(self, update: str) -> str:
        """PostgreSQL: the fenced one-row ``update`` (an engine statement, with the driver's
        placeholders) and the entry of the attempt it ended, in one statement with ``?``
        placeholders (`StoreBase._execute_hot`), which returns the entry's (task id, number) when
        the write landed and nothing when the fence refused it. ``update``'s own ``RETURNING``
        (a NOTIFY) is kept. Parameters: ``update``'s, then `log_ended`'s but the last (the task
        id comes from the row written)."""
        statement = self._ended_writes.get(update)
        if statement is None:
            # the driver's placeholders back to ``?`` (psycopg2 statements hold no other ``%s``:
            # a literal ``%`` would have to be written ``%%``)
            base, _, returned = update.replace("%s", "?").partition(" RETURNING ")
            extra = f", {returned}" if returned else ""
            statement = (f"WITH written AS ({base} RETURNING id, attempts, started_at{extra}) "
                         f"{self._ended_entry}")
            self._ended_writes[update] = statement
        return statement


@functools.cache
def attempt_statements(dialect_name: str, table: str) -> AttemptStatements:
    return AttemptStatements(DIALECTS[dialect_name], table)
