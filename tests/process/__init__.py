"""Tests that start real processes (marker ``process``): ``gta-supervisor``, the ``gta`` command, scripts,
spawned interpreters."""
