"""Prometheus metrics for GTA (see docs/metrics.md).

The pieces, one job each:

- `multiproc`: the private prometheus_client multiprocess directory a supervisor shares with
  the processes it spawns, and the folding of dead workers' files into an archive;
- `host`: the supervisor's half: sets that directory up before anything imports
  prometheus_client, records worker states and restarts, keeps the sidecar running;
- `sidecar`: the process that serves ``/metrics`` and ``/healthz`` (and the dashboard);
- `server`: its HTTP server, which bounds connections, requests and responses for every route;
- `hosts`: the ``Host`` names it answers to (against DNS rebinding);
- `queues`: the database-derived gauges, read at most once a second;
- `health`: what ``/healthz`` decides from the supervisor's status and the database.

Task-level metrics come from the built-in ``metrics`` plugin (`gta_plugins.metrics`).
Nothing here imports prometheus_client at import time: the mode it runs in (in-memory or
multiprocess) is fixed by whatever imports it first.
"""
