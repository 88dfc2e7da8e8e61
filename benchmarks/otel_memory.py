"""Tracing into memory, for ``drain.py --otel memory``: loaded as a plugin module by the
benchmark process, the supervisor and every worker, it gives each an SDK tracer provider whose
batch span processor exports to an in-memory exporter, so that the ``otel`` plugin traces every
submit and attempt at the full cost of making and exporting spans, without a network."""
from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):  # once per process
    provider = TracerProvider()
    # room for a 20,000-task submit's create spans, which the benchmark process makes at once
    provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter(), max_queue_size=65536))
    trace.set_tracer_provider(provider)
