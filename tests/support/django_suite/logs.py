"""The workers' ``django.tasks`` log records, sent to the test process and logged there.

A worker's settings (`tests.support.django_suite.settings`) add `SendToSuite` to the ``django.tasks``
logger when ``GTA_SUITE_LOG_PORT`` is set; the test runner listens there (`Receiver`) and
logs each record through the logger of the same name, so Django's ``assertLogs`` sees the
lines of the real worker. JSON lines over a loopback socket: nothing is unpickled.
"""
from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from typing import Any

#: Django's ``task_finished`` line, "Task id=<id> path=<path> state=<state>"
FINISHED = re.compile(r"Task id=(\S+) path=\S+ state=(SUCCESSFUL|FAILED)")


class SendToSuite(logging.Handler):
    """In a worker: each record as one JSON line to the test process."""

    def __init__(self, port: str) -> None:
        super().__init__()
        self.port = int(port)
        self.sock: socket.socket | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            line = json.dumps({"name": record.name, "levelno": record.levelno, "levelname": record.levelname,
                               "msg": record.getMessage(), "exc_text": record.exc_text})
            if self.sock is None:
                self.sock = socket.create_connection(("127.0.0.1", self.port))
            self.sock.sendall(line.encode() + b"\n")
        except Exception:
            self.handleError(record)


class Receiver:
    """In the test process: logs what the workers send, and tells who waits when a task's
    ``task_finished`` line has arrived."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.finished: set[str] = set()
        self.changed = threading.Condition()
        threading.Thread(target=self._accept, name="suite-logs", daemon=True).start()

    def wait_finished(self, result_id: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.changed:
            return self.changed.wait_for(lambda: result_id in self.finished, max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        self.server.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._read, args=(conn,), name="suite-logs-conn", daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                self._log(json.loads(line))

    def _log(self, fields: dict[str, Any]) -> None:
        logger = logging.getLogger(fields["name"])
        if logger.isEnabledFor(fields["levelno"]):  # as a local call would: assertLogs lowers the level
            logger.handle(logging.makeLogRecord(fields))
        finished = FINISHED.search(fields["msg"])
        if finished:
            with self.changed:
                self.finished.add(finished.group(1))
                self.changed.notify_all()
