"""GTA's built-in plugins. Each is an ordinary pluggy plugin registered through the
``gta_handlers`` entry point group, so any of them can be disabled by name or replaced."""
