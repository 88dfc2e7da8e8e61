"""SQLite: a task id is never handed out twice, not even the id of a submit that rolled back.

AUTOINCREMENT (the task table's id column on SQLite) never reuses the id of a deleted row, but
the counter it keeps (``sqlite_sequence``) is written in the inserting transaction: a rollback
takes it back, the next insert gets the same id, and ``status()`` of that id, asked by whoever
got it first, describes an unrelated task. PostgreSQL's sequences and InnoDB's counter are not
transactional and never go back.

So on SQLite every insert also writes down the largest id it handed out in a small file beside
the database (``<database>-<table>.ids``), which no rollback touches, and every insert first
raises the table's counter to that mark (`Statements.raise_id_counter`, `Statements.record_ids`,
through the SQL functions ``gta_id_floor`` and ``gta_id_issued`` registered on each connection).
Both run inside the insert's write transaction, and SQLite runs one write transaction at a time
per database file, so the file needs no lock of its own. The mark only ever raises the counter:
if the file is lost, ids are as AUTOINCREMENT alone makes them (never reused once committed).
Its writes are not synced to disk, as SQLite's own commits are not in WAL mode with
``synchronous=normal``: a power cut may forget the last ids, committed or not.
"""
from __future__ import annotations

import os

#: digits of a mark (an id fits in 19; one write of a fixed width replaces the whole mark)
WIDTH = 20


def mark_file(database: str, table: str) -> str | None:
    """Where the mark of ``table`` in the SQLite file ``database`` is kept (None in memory)."""
    if not database or database == ":memory:":
        return None
    return f"{os.path.abspath(database)}-{table}.ids"


def floor(database: str | None, table: str) -> int:
    """The largest id ever handed out for ``table`` (0: none known)."""
    path = mark_file(database or "", table)
    if path is None:
        return 0
    try:
        with open(path, "rb") as mark:
            text = mark.read(WIDTH)
    except OSError:
        return 0
    return int(text) if text.strip().isdigit() else 0


def issued(database: str | None, table: str, task_id: int | None) -> int:
    """Write down that ``task_id`` was handed out for ``table`` (the mark only grows); 0."""
    path = mark_file(database or "", table)
    if path is None or task_id is None or task_id <= floor(database, table):
        return 0
    try:  # one write of the whole mark, at offset 0, over the last
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, str(int(task_id)).zfill(WIDTH).encode(), 0)
        finally:
            os.close(fd)
    except OSError:  # a hint: without it, ids are AUTOINCREMENT's
        pass
    return 0


def forget(database: str | None, table: str) -> None:
    """Delete the mark of a dropped table."""
    path = mark_file(database or "", table)
    if path is not None:
        try:
            os.unlink(path)
        except OSError:
            pass


__all__ = ["floor", "forget", "issued", "mark_file"]
