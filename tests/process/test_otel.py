"""Tracing with OpenTelemetry (the built-in ``otel`` plugin), end to end with real processes.

Every process is configured the standard way, by ``opentelemetry-instrument`` and ``OTEL_*``
variables, and exports OTLP/HTTP to a receiver the test runs on 127.0.0.1: a small web
application (``tests/support/otel_app.py``) whose request spans continue the test's ``traceparent``
header and which submits tasks in its transactions, and ``opentelemetry-instrument
gta-supervisor`` with its workers. The batch span processors export only when flushed (the
receiver's ``environment``), so a worker's span that arrives was flushed by GTA (a worker exits
with ``os._exit``, which runs no ``atexit`` handler).

No test here configures a tracer provider in the pytest process: the plugin would then trace
every other test's submits.
"""
from __future__ import annotations

import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import gta_core

from ..support.backends import only_on
from ..support.helpers import Env, wait_for
from ..support.otel_paths import CALLER_TRACEPARENT
from ..support.otlp_receiver import OtlpReceiver, ReceivedSpan

BIN = Path(sys.executable).parent
INSTRUMENT = str(BIN / "opentelemetry-instrument")
SUPERVISOR = (INSTRUMENT, str(BIN / "gta-supervisor"))
#: the working directory of what opentelemetry-instrument starts: it puts its own first on
#: PYTHONPATH, which from the checkout would import the checkout's gta_core, not the installed one
OUTSIDE = Path(tempfile.gettempdir())
PLUGINS = "tests.handlers.tasks,tests.handlers.otel_tasks"


@dataclasses.dataclass(frozen=True)
class Request:
    """A request the test sent the web application: the ids it submitted, and the trace and
    span ids of the (unexported) client span whose ``traceparent`` it carried."""

    ids: list[int]
    trace_id: str
    span_id: str


class App:
    """``opentelemetry-instrument python -m tests.support.otel_app``, serving on 127.0.0.1."""

    def __init__(self, receiver: OtlpReceiver) -> None:
        environ = {**os.environ, **receiver.environment("shop")}
        self.popen = subprocess.Popen([INSTRUMENT, sys.executable, "-m", "tests.support.otel_app"], env=environ,
                                      stdout=subprocess.PIPE, start_new_session=True, cwd=OUTSIDE)
        assert self.popen.stdout is not None
        self.port = int(self.popen.stdout.readline() or b"0")
        assert self.port, "the web application did not start"

    def post(self, action: str) -> Request:
        trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/{action}", data=b"", method="POST",
                                         headers={"traceparent": f"00-{trace_id}-{span_id}-01"})
        with urllib.request.urlopen(request, timeout=30) as reply:
            return Request(json.loads(reply.read()), trace_id, span_id)

    def stop(self) -> None:
        """SIGTERM: the application exits normally, flushing its spans."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        self.popen.wait(30)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()


def only(spans: list[ReceivedSpan]) -> ReceivedSpan:
    assert len(spans) == 1, spans
    return spans[0]


def request_span(receiver: OtlpReceiver, request: Request) -> ReceivedSpan:
    """The application's SERVER span of ``request``: a child of the client span it was sent from."""
    span = only([span for span in receiver.spans
                 if span.trace_id == request.trace_id and span.kind == "SPAN_KIND_SERVER"])
    assert span.parent_span_id == request.span_id and span.service == "shop"
    return span


def children(receiver: OtlpReceiver, parent: ReceivedSpan, name: str) -> list[ReceivedSpan]:
    return [span for span in receiver.named(name) if span.child_of(parent)]


def stop(supervisor: object, app: App) -> None:
    """Stop the application and the supervisor gracefully: every span is flushed on the way."""
    app.stop()
    supervisor.signal(signal.SIGTERM)  # type: ignore[attr-defined]
    assert supervisor.wait() == 0  # type: ignore[attr-defined]


def test_a_request_s_trace_reaches_every_attempt_of_its_tasks(env: Env, monkeypatch: pytest.MonkeyPatch,
                                                               receiver: OtlpReceiver) -> None:
    env.with_plugins(monkeypatch, PLUGINS)
    supervisor = env.supervisor(2, command=SUPERVISOR, cwd=OUTSIDE, extra_env=receiver.environment("worker"))
    app = App(receiver)
    try:
        checkout, ship, pack, quote, refund = (app.post(action) for action in ("checkout", "ship", "pack", "quote",
                                                                               "refund"))
        env.wait_final([*checkout.ids, *ship.ids, *pack.ids, *quote.ids, *refund.ids])
        rolled_back = app.post("rollback")
        sentinel = app.post("later")  # leased after anything committed before it
        env.wait_final(sentinel.ids)
    finally:
        stop(supervisor, app)

    # checkout: request -> send; two attempts, each a root linked to the send span
    send = only(children(receiver, request_span(receiver, checkout), "send charge"))
    assert send.kind == "SPAN_KIND_PRODUCER" and send.service == "shop"
    assert send.attributes == {"messaging.system": "gta", "messaging.operation.type": "send",
                               "messaging.operation.name": "send", "messaging.destination.name": "default",
                               "messaging.message.id": str(checkout.ids[0]), "gta.task.key": "charge"}
    attempts = sorted(receiver.wait("process charge", 2, **{"messaging.message.id": str(checkout.ids[0])}),
                      key=lambda span: span.attributes["gta.task.attempt"])
    assert [span.attributes["gta.task.attempt"] for span in attempts] == [1, 2]
    for span in attempts:
        assert span.kind == "SPAN_KIND_CONSUMER" and span.service == "worker"
        assert span.parent_span_id == "" and span.trace_id != checkout.trace_id  # a root of its own trace
        assert span.links_to(send) == [{}]
        assert {key: span.attributes[key] for key in ("messaging.system", "messaging.operation.type",
                                                      "messaging.destination.name", "gta.task.key",
                                                      "gta.task.max_attempts")} == {
            "messaging.system": "gta", "messaging.operation.type": "process", "messaging.destination.name": "default",
            "gta.task.key": "charge", "gta.task.max_attempts": 3}
        assert span.attributes["gta.task.wait_seconds"] >= 0
        assert span.attributes["messaging.client.id"].count(":") == 2  # the worker's lease owner
        # the handler's own span nests under the attempt's
        assert len(children(receiver, span, "charge card")) == 1
    failed, succeeded = attempts
    assert failed.status == "STATUS_CODE_ERROR"
    assert failed.attributes["error.type"] == "RuntimeError"
    assert failed.attributes["gta.task.outcome"] == "retried" and failed.attributes["gta.task.retry_delay_seconds"] > 0
    assert [(name, event["exception.type"], event["exception.message"]) for name, event in failed.events] == [
        ("exception", "RuntimeError", "card declined")]
    assert succeeded.status == "STATUS_CODE_UNSET" and succeeded.attributes["gta.task.outcome"] == "succeeded"
    assert "error.type" not in succeeded.attributes and succeeded.events == []
    assert failed.end <= succeeded.start

    # a child task: its send span nests under its parent's attempt, its attempt links to it
    ship_send = only(children(receiver, request_span(receiver, ship), "send ship"))
    parent_attempt = only(receiver.named("process ship"))
    assert parent_attempt.links_to(ship_send) == [{}]
    courier = only(children(receiver, parent_attempt, "book courier"))
    child_send = only(children(receiver, courier, "send notify"))
    assert child_send.attributes["gta.submit.deferred"] is True  # written with the parent's success
    child_attempt = only([span for span in receiver.named("process notify") if span.links_to(child_send)])
    assert child_attempt.links_to(child_send) == [{}]
    assert child_attempt.attributes["gta.task.outcome"] == "succeeded"

    # a group: one send for the members and the callback, a create span per task; the callback's
    # attempt links to its own create span, in the request's trace
    group_send = only(children(receiver, request_span(receiver, pack), "send"))
    assert group_send.attributes["messaging.batch.message_count"] == 3
    creates = {span.attributes["messaging.message.id"]: span for span in children(receiver, group_send, "create pick")
               + children(receiver, group_send, "create pack")}
    assert sorted(creates) == sorted(str(task_id) for task_id in pack.ids)
    callback = only(receiver.named("process pack"))
    assert callback.links_to(creates[str(pack.ids[-1])]) == [{}]
    assert creates[str(pack.ids[-1])].trace_id == pack.trace_id
    for member in pack.ids[:-1]:
        assert only(receiver.named("process pick", **{"messaging.message.id": str(member)})).links_to(
            creates[str(member)]) == [{}]

    # an async handler: its attempt cancelled at its timeout, then one whose own span nests in it
    quote_send = only(children(receiver, request_span(receiver, quote), "send quote"))
    overran, quoted = sorted(receiver.named("process quote"), key=lambda span: span.attributes["gta.task.attempt"])
    assert overran.attributes["error.type"] == "gta_core.errors.TaskTimeout" and overran.status == "STATUS_CODE_ERROR"
    assert overran.attributes["gta.task.outcome"] == "retried" and overran.links_to(quote_send) == [{}]
    assert quoted.attributes["gta.task.outcome"] == "succeeded" and quoted.links_to(quote_send) == [{}]
    assert len(children(receiver, quoted, "fetch quote")) == 1

    # a task that fails for good (Fail): one attempt, failed
    failed_for_good = only(receiver.named("process fails_for_good"))
    assert failed_for_good.links_to(only(children(receiver, request_span(receiver, refund), "send fails_for_good")))
    assert failed_for_good.attributes["gta.task.outcome"] == "failed" and failed_for_good.status == "STATUS_CODE_ERROR"
    assert failed_for_good.attributes["error.type"] == "gta_core.errors.Fail"
    assert "gta.task.retry_delay_seconds" not in failed_for_good.attributes

    # a rolled-back submit: its send span exists, and nothing ever ran for it
    rollback_send = only(children(receiver, request_span(receiver, rolled_back), "send charge"))
    assert [span for span in receiver.spans if span.links_to(rollback_send) or span.child_of(rollback_send)] == []
    assert only(receiver.named("process notify", **{"messaging.message.id": str(sentinel.ids[0])}))


@pytest.mark.parametrize("backend", [only_on("postgres")])
def test_parent_first_makes_the_first_immediate_attempt_a_child_and_links_the_rest(
        env: Env, monkeypatch: pytest.MonkeyPatch, receiver: OtlpReceiver) -> None:
    env.with_plugins(monkeypatch, PLUGINS)
    # a worker is recycled after each task: its spans must arrive before it goes, without any stop
    supervisor = env.supervisor(1, "--otel-span-relation", "parent-first", "--max-tasks-per-worker", "1",
                                command=SUPERVISOR, cwd=OUTSIDE, extra_env=receiver.environment("worker"))
    app = App(receiver)
    try:
        checkout, ship, delayed = app.post("checkout"), app.post("ship"), app.post("delayed")
        attempts = sorted(receiver.wait("process charge", 2), key=lambda span: span.attributes["gta.task.attempt"])
        notified = receiver.wait("process notify", 2)  # the child's, and the delayed task's
    finally:
        stop(supervisor, app)

    send = only(children(receiver, request_span(receiver, checkout), "send charge"))
    first, retried = attempts
    assert first.child_of(send) and first.links == []  # the first immediate attempt: a child of the submit
    assert retried.parent_span_id == "" and retried.links_to(send) == [{}]  # a retry: linked
    # a child task, submitted alone and due at once, nests under its parent's attempt too
    parent_attempt = only(receiver.named("process ship"))
    assert parent_attempt.child_of(only(children(receiver, request_span(receiver, ship), "send ship")))
    child_send = only(children(receiver, only(children(receiver, parent_attempt, "book courier")), "send notify"))
    delayed_attempt = only(receiver.named("process notify", **{"messaging.message.id": str(delayed.ids[0])}))
    child_attempt = only([span for span in notified if span is not delayed_attempt])
    assert child_attempt.child_of(child_send) and child_attempt.trace_id == ship.trace_id
    # a task submitted with a delay is linked
    delayed_send = only(children(receiver, request_span(receiver, delayed), "send notify"))
    assert delayed_attempt.parent_span_id == "" and delayed_attempt.links_to(delayed_send) == [{}]


def started(env: Env, phase: str) -> int:
    """The pid of the worker running the attempt that wrote ``phase`` to the ledger, once it did."""
    return wait_for(lambda: next((entry["pid"] for entry in env.ledger_entries() if entry.get("phase") == phase),
                                 None), what=f"an attempt to write {phase!r}")


@pytest.mark.parametrize("backend", [only_on("postgres")])
def test_a_sigkilled_worker_s_attempt_shows_in_the_janitor_s_span(env: Env, monkeypatch: pytest.MonkeyPatch,
                                                                   receiver: OtlpReceiver) -> None:
    env.with_plugins(monkeypatch, PLUGINS)
    supervisor = env.supervisor(1, command=SUPERVISOR, cwd=OUTSIDE, extra_env=receiver.environment("worker"))
    app = App(receiver)
    try:
        stalled = app.post("stall")
        task_id = stalled.ids[0]
        os.kill(started(env, "stall"), signal.SIGKILL)
        assert env.wait_final([task_id]) == {task_id: "succeeded"}
        # and an attempt cancelled while it runs: its outcome write is refused
        lingering = app.post("linger")
        started(env, "linger")
        gta_core.cancel(lingering.ids[0])
        started(env, "lingered")  # it saw the cancel and returned; its outcome write is refused
    finally:
        stop(supervisor, app)
    cancelled = only(receiver.named("process linger"))
    assert cancelled.attributes["gta.task.outcome"] == "cancelled" and cancelled.status == "STATUS_CODE_ERROR"
    assert cancelled.attributes["error.type"] == "cancelled"

    send = only(children(receiver, request_span(receiver, stalled), "send stall"))
    settle = only(receiver.named("settle"))
    assert settle.service == "worker" and settle.attributes["messaging.operation.type"] == "settle"
    assert settle.attributes["gta.task.ids"] == [task_id]
    assert settle.links_to(send) == [{"messaging.message.id": str(task_id), "gta.task.key": "stall",
                                      "gta.task.attempt": 1, "gta.task.outcome": "retried",
                                      "error.type": "gta_core.errors.WorkerDied"}]
    # the killed attempt's own span died with its worker; the next attempt ran and succeeded
    assert [span.attributes["gta.task.attempt"] for span in receiver.named("process stall")] == [2]
    assert only(receiver.named("process stall")).links_to(send) == [{}]


def test_every_submit_path_carries_its_creation_context(env: Env, backend: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    env.with_plugins(monkeypatch, "tests.handlers.tasks,tests.handlers.workflow_tasks,gta_core.contrib.django")
    done = subprocess.run([sys.executable, "-m", "tests.support.otel_paths"],
                          env={**os.environ, "GTA_TEST_BACKEND": backend}, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads(done.stdout)
    ids, spans = result["ids"], result["spans"]
    contexts = {int(key): value for key, value in result["contexts"].items()}
    request = only([span for span in spans if span["name"] == "request"])

    def sent(name: str, parent: str) -> list[dict[str, object]]:
        return [span for span in spans if span["name"] == name and span["parent"] == parent]

    def carries(task_id: int, span: dict[str, object], link: str | None = None) -> None:
        """The row of ``task_id`` carries ``span`` as its creation context (and the link hint)."""
        context = contexts[task_id]
        assert context["traceparent"].split("-")[1:3] == [span["trace_id"], span["span_id"]]
        assert context.get("otel.link") == link

    # asubmit and the Django backend: a send span in the request, the row carries it
    for path, key in (("asubmit", "record"), ("django", "django:tests.handlers.django_app.tasks.remember")):
        send = only([span for span in sent(f"send {key}", request["span_id"])
                     if span["attributes"]["messaging.message.id"] == str(ids[path][0])])
        assert send["kind"] == "PRODUCER" and send["trace_id"] == request["trace_id"]
        carries(ids[path][0], send)
    # a chain: one send, a create span per step; the steps after the first wait for it
    chain_send = only(sent("send", request["span_id"]))
    assert chain_send["attributes"]["messaging.batch.message_count"] == 3
    creates = {span["attributes"]["messaging.message.id"]: span for span in spans
               if span["parent"] == chain_send["span_id"]}
    for index, task_id in enumerate(ids["chain"]):
        assert creates[str(task_id)]["name"] == ("create record" if index == 0 else "create add")
        carries(task_id, creates[str(task_id)], "fan-out" if index == 0 else "delayed")
    # a creation context the caller gave is kept as it is
    assert contexts[ids["given"][0]] == {"traceparent": CALLER_TRACEPARENT}
    # a periodic task's slot, enqueued outside any span: its send span is a root
    periodic_send = only(sent("send record", ""))
    assert periodic_send["trace_id"] != request["trace_id"]
    carries(ids["periodic"][0], periodic_send)  # its slot is due


@pytest.mark.parametrize("backend", ["sqlite"])
def test_without_a_tracer_provider_nothing_is_traced_or_stored(env: Env) -> None:
    plugins = env.runtime.plugins
    assert {"gta_submit", "gta_attempt", "gta_settle"} <= plugins.implemented  # installed: its hooks are there
    task_id = gta_core.submit(gta_core.OWN_TRANSACTION, "record", {"n": 1})
    assert env.store.get(task_id)["context"] is None  # but no provider: nothing carried
    assert plugins.manager.get_plugin("otel").tracer() is None


@pytest.mark.parametrize("blocked", [False, True], ids=["installed", "absent"])
def test_the_plugin_imports_opentelemetry_only_when_used(blocked: bool, tmp_path: Path) -> None:
    """Loading the plugins and submitting a task import no OpenTelemetry module where none is
    configured; where opentelemetry-api cannot be imported, the ``otel`` entry point registers
    no hook at all (no call per task)."""
    script = f"""
import sys
if {blocked}:
    sys.modules["opentelemetry"] = None  # as if opentelemetry-api were not installed
import gta_core
runtime = gta_core.configure(database_url="sqlite:///{tmp_path / 'tasks.db'}", plugins=["tests.handlers.tasks"])
runtime.store.migrate()
gta_core.submit(gta_core.OWN_TRANSACTION, "record", {{"n": 1}})
print(sorted(name for name in runtime.plugins.implemented if name in ("gta_submit", "gta_attempt", "gta_settle",
                                                                       "gta_worker_stopped")))
print(sorted(name for name in sys.modules if name.startswith("opentelemetry.")))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "GTA_PLUGINS": ""})
    assert done.returncode == 0, done.stderr
    hooks, imported = done.stdout.splitlines()
    assert hooks == ("[]" if blocked else "['gta_attempt', 'gta_settle', 'gta_submit', 'gta_worker_stopped']")
    assert imported == "[]"


@pytest.mark.parametrize("backend", [only_on("postgres")])
def test_a_lease_nobody_renews_is_rescued_in_a_span(env: Env, monkeypatch: pytest.MonkeyPatch,
                                                    receiver: OtlpReceiver) -> None:
    env.with_plugins(monkeypatch, PLUGINS)
    fast = {**receiver.environment("worker"), "GTA_LEASE_TIMEOUT": "2"}
    app = App(receiver)
    supervisors = [env.supervisor(1, command=SUPERVISOR, cwd=OUTSIDE, extra_env=fast)]
    try:
        stalled = app.post("stall")
        task_id = stalled.ids[0]
        started(env, "stall")
        supervisors[0].kill_tree()  # its host is gone: no janitor settles the lease, another supervisor's rescuer does
        supervisors.append(env.supervisor(1, command=SUPERVISOR, cwd=OUTSIDE, extra_env=fast))
        assert env.wait_final([task_id]) == {task_id: "succeeded"}
    finally:
        stop(supervisors[-1], app)

    send = only(children(receiver, request_span(receiver, stalled), "send stall"))
    rescue = only(receiver.named("rescue"))
    assert rescue.attributes["gta.task.ids"] == [task_id] and rescue.attributes["messaging.batch.message_count"] == 1
    assert rescue.links_to(send) == [{"messaging.message.id": str(task_id), "gta.task.key": "stall",
                                      "gta.task.attempt": 1, "gta.task.outcome": "retried",
                                      "error.type": "gta_core.errors.LeaseExpired"}]
    assert [span.attributes["gta.task.attempt"] for span in receiver.named("process stall")] == [2]
