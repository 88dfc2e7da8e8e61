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
per database file, so the file needs no lock of its own (each process keeps it open: a read
and a write per insert). The mark only ever raises the counter: if the file is lost, ids are
as AUTOINCREMENT alone makes them (never reused once committed).
Its writes are not synced to disk, as SQLite's own commits are not in WAL mode with
``synchronous=normal``: a power cut may forget the last ids, committed or not.
"""
from __future__ import annotations

import contextlib
import os
import threading

#: digits of a mark (an id fits in 19; one write of a fixed width replaces the whole mark)
WIDTH = 20

_lock = threading.Lock()
_files: dict[str, int] = {}


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
        text = os.pread(_descriptor(path), WIDTH, 0)
    except OSError:
        return 0
    return int(text) if text.strip().isdigit() else 0


def issued(database: str | None, table: str, task_id: int | None) -> int:
    """Write down that ``task_id`` was handed out for ``table`` (the mark only grows); 0."""
    path = mark_file(database or "", table)
    if path is None or task_id is None or task_id <= floor(database, table):
        return 0
    try:  # one write of the whole mark, at offset 0, over the last
        os.pwrite(_descriptor(path), str(int(task_id)).zfill(WIDTH).encode(), 0)
    except OSError:  # a hint: without it, ids are AUTOINCREMENT's
        pass
    return 0


def _descriptor(path: str) -> int:
    """The mark file, kept open by this process (a read and a write at offset 0 need no position,
    so threads and forked children may share it)."""
    with _lock:
        fd = _files.get(path)
        if fd is None:
            fd = _files[path] = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        return fd


def forget(database: str | None, table: str) -> None:
    """Delete the mark of a dropped table (and close this process's descriptor of it)."""
    path = mark_file(database or "", table)
    if path is None:
        return
    with _lock:
        fd = _files.pop(path, None)
    with contextlib.suppress(OSError):
        if fd is not None:
            os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(path)


__all__ = ["floor", "forget", "issued", "mark_file"]
