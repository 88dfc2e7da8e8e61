"""A small web application for the tracing tests, run as
``opentelemetry-instrument python -m tests.support.otel_app`` (its tracer provider configured by the
``OTEL_*`` variables, as a deployed application's is).

It serves ``POST /<action>`` on 127.0.0.1 (its port is the first line it prints): each request
is a SERVER span continuing the caller's ``traceparent`` header, inside which the action
submits tasks in a transaction of the GTA database (``GTA_*`` variables); the reply is the JSON
list of the ids submitted. SIGTERM stops it normally, so its spans are flushed at exit.
"""
from __future__ import annotations

import datetime as dt
import http.server
import json
import signal
import sys
from collections.abc import Callable
from typing import Any

from opentelemetry import propagate, trace

import gta_core
from gta_core import TaskRequest

tracer = trace.get_tracer("shop.web")


class RolledBack(Exception):
    """Raised inside the transaction to roll it back."""


def checkout(tx: Any) -> list[int]:
    return [gta_core.submit(tx, "charge", {"order": 1})]


def rollback(tx: Any) -> list[int]:
    submitted = [gta_core.submit(tx, "charge", {"order": 2})]
    raise RolledBack(submitted)


def ship(tx: Any) -> list[int]:
    return [gta_core.submit(tx, "ship", {"order": 3})]


def pack(tx: Any) -> list[int]:
    workflow = gta_core.group(tx, [("pick", {"item": "a"}), ("pick", {"item": "b"})], on_complete=TaskRequest("pack"))
    assert workflow.callback is not None
    return [*workflow.ids, workflow.callback]


def refund(tx: Any) -> list[int]:
    return [gta_core.submit(tx, "fails_for_good")]


def later(tx: Any) -> list[int]:
    return [gta_core.submit(tx, "notify", {"order": 4}, run_at=dt.datetime.now(dt.timezone.utc))]


def delayed(tx: Any) -> list[int]:
    return [gta_core.submit(tx, "notify", {"order": 5}, delay=1)]


def stall(tx: Any) -> list[int]:
    return [gta_core.submit(tx, "stall")]


def quote(tx: Any) -> list[int]:
    return [gta_core.submit(tx, "quote")]


def linger(tx: Any) -> list[int]:
    return [gta_core.submit(tx, "linger")]


ACTIONS: dict[str, Callable[[Any], list[int]]] = {
    "checkout": checkout, "rollback": rollback, "ship": ship, "pack": pack, "later": later, "delayed": delayed,
    "stall": stall, "quote": quote, "linger": linger, "refund": refund}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        action = ACTIONS[self.path.strip("/")]
        incoming = propagate.extract({name.lower(): value for name, value in self.headers.items()})
        with tracer.start_as_current_span(f"POST {self.path}", context=incoming, kind=trace.SpanKind.SERVER,
                                          attributes={"http.request.method": "POST", "url.path": self.path}):
            db = gta_core.get_runtime().db
            try:
                with db.atomic() as tx:
                    ids = action(tx)
            except RolledBack as rolled_back:
                ids = rolled_back.args[0]
        body = json.dumps(ids).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def main() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a normal exit: atexit flushes the spans
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
