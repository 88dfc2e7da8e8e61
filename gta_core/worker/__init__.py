"""A worker process: the parts that run in one process and share one book of leases.

`process` is the entry point a supervisor spawns; `held_leases` is the book of the leases the
worker holds; `leasing` (the main thread) leases tasks into it; `thread_runner` and
`async_runner` run them; `completer` writes their outcomes fenced on the lease; `heartbeat`
renews the leases and delivers cancels; `channel` is the shared memory the supervisor reads.
Empty on purpose: importing one part must not import the others (or multiprocess).
"""
