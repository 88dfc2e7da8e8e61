"""The supervisor process: `manager` spawns, watches and restarts the worker processes;
`services/` holds its background loops (rescue, janitor, periodic tasks, listener, roster).

Empty on purpose: `gta_core.supervisor.manager` imports multiprocess, which a process that
only reads a service's module should not load.
"""
