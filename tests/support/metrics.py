"""A supervisor with its metrics sidecar on a free port, and reading the sidecar (``/metrics``,
``/healthz``): shared by the tests of metrics and of the supervisor's services."""
from __future__ import annotations

import json
from typing import Any

from .helpers import Env, SupervisorProcess, wait_for
from .servers import free_port, http_get


def with_metrics(env: Env, workers: int, *args: str) -> tuple[SupervisorProcess, str]:
    """A supervisor whose sidecar answers on a free port; (process, 'host:port')."""
    bind = f"127.0.0.1:{free_port()}"
    process = env.supervisor(workers, "--metrics", "on", "--metrics-bind", bind, *args)
    wait_for(lambda: http_get(f"http://{bind}/metrics", 5)[0] == 200, what="the metrics sidecar")
    return process, bind


def scrape(bind: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The sidecar's samples by (name, sorted labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body = http_get(f"http://{bind}/metrics")
    assert status == 200, body
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body.decode()) for sample in family.samples}


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(value for (sample, sample_labels), value in samples.items()
               if sample == name and set(labels.items()) <= set(sample_labels))


def health(bind: str) -> tuple[int, dict[str, Any]]:
    status, body = http_get(f"http://{bind}/healthz")
    return status, (json.loads(body) if body else {})
