"""An example third-party GTA plugin, discovered through the ``gta_handlers`` entry point group."""
