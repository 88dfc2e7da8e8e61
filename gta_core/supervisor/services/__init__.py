"""The supervisor's background loops, one module each, run and watched by `supervisor.services.runner.ServiceRunner`.

- `advertiser`: keeps this supervisor's row of the roster (its queues and task keys) alive;
- `rescuer`: puts expired leases back to pending, cluster-wide, every ``rescue_interval``;
- `janitor`: settles a dead worker's leases at once (writes its unwritten successes, retries
  what it was running, releases the rest);
- `periodic`: enqueues each periodic task's latest slot;
- `listener`: on PostgreSQL, LISTENs for submit's NOTIFY and wakes the workers.

A loop that dies is logged with its traceback, counted (``gta_service_restarts_total``),
restarted with backoff and reported by ``/healthz`` meanwhile; so is one stuck in an iteration.
"""
from __future__ import annotations

from .runner import Outage, Service, ServiceRunner

__all__ = ["Outage", "Service", "ServiceRunner"]
