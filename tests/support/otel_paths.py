"""Every way a task is submitted, traced: run as ``python -m tests.support.otel_paths`` by
``tests/process/test_otel.py`` (a tracer provider must not be set in the pytest process).

With an SDK tracer provider and an in-memory exporter, inside a ``request`` span, it submits
through ``asubmit`` on an async handle of the database (``GTA_DATABASE_URL``), a ``chain``, the
Django tasks backend, ``submit`` with a creation context given by the caller, and the periodic
scheduler (outside any span); then prints, as JSON, each submit's ids, every span and the
context each row carries.
"""
from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import gta_core
from gta_core.schedules import periodic
from gta_core.supervisor.services.periodic import Scheduler

from .async_handles import ASYNC_KINDS
from .handles import use_django_database

CALLER_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def asubmit(url: str, backend: str) -> list[int]:
    caller = await next(iter(ASYNC_KINDS[backend].values()))(url)
    try:
        ids = [await gta_core.asubmit(caller.handle, "record", {"n": 1})]
        await caller.commit()
    finally:
        await caller.close()
    return ids


def django_enqueue() -> list[int]:
    from django.db import transaction

    from ..handlers.django_app.tasks import remember
    with transaction.atomic():
        # a result id is the GTA task id, a dot and the row's secret
        return [int(remember.enqueue(n=2).id.partition(".")[0])]


def main() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    runtime = gta_core.get_runtime()
    url, backend = os.environ["GTA_DATABASE_URL"], os.environ["GTA_TEST_BACKEND"]
    use_django_database("default", url)
    ids: dict[str, list[int]] = {}
    with trace.get_tracer("test").start_as_current_span("request"):
        ids["asubmit"] = asyncio.run(asubmit(url, backend))
        with runtime.db.atomic() as tx:
            ids["chain"] = gta_core.chain(tx, [("record", {"n": 3}), ("add", {}), ("add", {})]).ids
            ids["given"] = [gta_core.submit(tx, "record", {"n": 4}, context={"traceparent": CALLER_TRACEPARENT})]
        ids["django"] = django_enqueue()
    Scheduler(runtime, [periodic("tick", key="record", every=3600)], lambda: None).enqueue_due()
    cursor = runtime.db.execute_sql(f"SELECT id FROM {runtime.settings.table} WHERE dedupe_key LIKE {runtime.db.param}",
                                    ("periodic:tick:%",))
    ids["periodic"] = [int(row[0]) for row in cursor.fetchall()]

    def span(item: Any) -> dict[str, Any]:
        return {"name": item.name, "kind": item.kind.name, "trace_id": f"{item.context.trace_id:032x}",
                "span_id": f"{item.context.span_id:016x}",
                "parent": f"{item.parent.span_id:016x}" if item.parent is not None else "",
                "attributes": dict(item.attributes or {})}
    contexts = {task_id: json.loads(runtime.store.get(task_id)["context"] or "null")
                for task_ids in ids.values() for task_id in task_ids}
    print(json.dumps({"ids": ids, "spans": [span(item) for item in exporter.get_finished_spans()],
                      "contexts": contexts}))


if __name__ == "__main__":
    main()
