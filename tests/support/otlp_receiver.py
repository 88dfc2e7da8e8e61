"""An OTLP/HTTP trace receiver on 127.0.0.1, for the tracing tests (``tests/process/test_otel.py``)."""
from __future__ import annotations

import dataclasses
import gzip
import http.server
import threading
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from .helpers import wait_for


@dataclasses.dataclass(frozen=True)
class ReceivedSpan:
    """One span an OTLP exporter sent, with ids as hex and attribute values as Python values."""

    service: str
    name: str
    kind: str  # SPAN_KIND_PRODUCER, ...
    trace_id: str
    span_id: str
    parent_span_id: str
    status: str  # STATUS_CODE_UNSET, STATUS_CODE_OK, STATUS_CODE_ERROR
    attributes: dict[str, Any]
    links: list[tuple[str, str, dict[str, Any]]]  # (trace id, span id, attributes)
    events: list[tuple[str, dict[str, Any]]]
    start: int  # ns since the epoch
    end: int

    def links_to(self, span: ReceivedSpan) -> list[dict[str, Any]]:
        """The attributes of each of this span's links to ``span``."""
        return [attributes for trace_id, span_id, attributes in self.links
                if (trace_id, span_id) == (span.trace_id, span.span_id)]

    def child_of(self, span: ReceivedSpan) -> bool:
        return (self.trace_id, self.parent_span_id) == (span.trace_id, span.span_id)


class OtlpReceiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1 (what a collector's ``otlphttp`` receiver does
    for ``POST /v1/traces`` with protobuf bodies), keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver._receive(body)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="otlp-receiver", daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def environment(self, service: str) -> dict[str, str]:
        """The ``OTEL_*`` variables that make ``opentelemetry-instrument`` export every span of a
        process to this receiver, only when flushed (the batch delay is a minute): a span that
        arrives was flushed by its process, at exit or by GTA."""
        return {"OTEL_SERVICE_NAME": service, "OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "none",
                "OTEL_LOGS_EXPORTER": "none", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": self.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "60000"}

    def _receive(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        received = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(ReceivedSpan(
                        service=str(resource.get("service.name")), name=span.name,
                        kind=Span.SpanKind.Name(span.kind), trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(), status=Status.StatusCode.Name(span.status.code),
                        attributes=_attributes(span.attributes),
                        links=[(link.trace_id.hex(), link.span_id.hex(), _attributes(link.attributes))
                               for link in span.links],
                        events=[(event.name, _attributes(event.attributes)) for event in span.events],
                        start=span.start_time_unix_nano, end=span.end_time_unix_nano))
        with self.lock:
            self.spans.extend(received)

    def named(self, name: str, **attributes: Any) -> list[ReceivedSpan]:
        """The spans received so far with this name and these attribute values."""
        with self.lock:
            spans = list(self.spans)
        return [span for span in spans if span.name == name
                and all(span.attributes.get(key) == value for key, value in attributes.items())]

    def wait(self, name: str, count: int = 1, **attributes: Any) -> list[ReceivedSpan]:
        """Wait until ``count`` spans with this name and attribute values arrived; those spans."""
        def arrived() -> list[ReceivedSpan] | None:
            spans = self.named(name, **attributes)
            return spans if len(spans) >= count else None
        return wait_for(arrived, what=f"{count} span(s) {name!r} {attributes or ''} at the OTLP receiver")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _attributes(pairs: Any) -> dict[str, Any]:
    """OTLP ``KeyValue`` pairs as a dict of Python values."""
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None
