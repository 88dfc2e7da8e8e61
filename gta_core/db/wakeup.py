"""Local wake-ups: a committed submit pokes the supervisors on this host at once.

Each supervisor binds a Unix datagram socket in a directory named after the task table's
identity; a commit sends one byte to every socket there. It is only a hint (a lost datagram
costs at most one poll interval), so every error is ignored. PostgreSQL does not need it:
there ``NOTIFY`` inside the submitting transaction wakes supervisors on every host.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import socket
import tempfile

import peewee

from .connect import dialect_of


def wake_key(db: peewee.Database, table: str) -> str:
    """A name for (database, table) that the submitter and the supervisor agree on."""
    if dialect_of(db) == "sqlite":
        where = os.path.realpath(db.database)
    else:
        params = db.connect_params
        where = f"{params.get('host', '127.0.0.1')}:{params.get('port', '')}/{db.database}"
    return hashlib.sha1(f"{dialect_of(db)}|{where}|{table}".encode()).hexdigest()[:16]


def wake_dir(key: str) -> str:
    return os.path.join(tempfile.gettempdir(), f"gta-wake-{os.getuid()}", key)


def notify_local(key: str) -> None:
    """Send a wake-up to every supervisor of this table on this host."""
    directory = wake_dir(key)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for name in names:
            path = os.path.join(directory, name)
            try:
                sock.sendto(b"w", path)
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):  # its supervisor is gone
                    with contextlib.suppress(OSError):
                        os.unlink(path)


class WakeSocket:
    """The supervisor's end: a non-blocking datagram socket to select() on."""

    def __init__(self, key: str) -> None:
        directory = wake_dir(key)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.path = os.path.join(directory, f"{os.getpid()}.sock")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> int:
        """Read every pending datagram; how many there were."""
        count = 0
        while True:
            try:
                self.sock.recv(64)
            except (BlockingIOError, InterruptedError):
                return count
            count += 1

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
