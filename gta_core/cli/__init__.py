"""The command lines: `main` parses ``gta`` and ``gta-supervisor`` (one-line errors, exit
codes) and runs their commands; `commands` prints what the admin commands did; `terminal`
escapes table values for printing; `demo_run` is ``gta demo``."""
