"""The web dashboard, served by the metrics sidecar at ``/`` (see docs/dashboard.md).

`service.mount` builds it for a sidecar; `service.serve` answers one request of the sidecar's
HTTP server (`gta_core.metrics.server`, which bounds connections, requests and responses) with
it; the supervisor calls `access.prepare` at start. This ``__init__`` imports nothing, so
that the supervisor, which only prepares the settings, does not load the pages.
Modules: `access` (token, origin), `sessions` (sign-ins, their CSRF values and flash
messages), `throttle` (wrong tokens per client), `inputs` (checked request values), `queries`
(bounded reads), `history` (the last 24 hours, recorded by the sidecar), `render`, `pages` and
`charts` (escaped HTML), one module per page (`overview`, `queue_pages`, `worker_page`,
`task_pages`, `workflow_page`), `live` (live updates), `app` (routes), `actions` (POST) and
`operator` (the writes, recorded as the dashboard's), `local` (what the sidecar knows of its
supervisor).
"""
