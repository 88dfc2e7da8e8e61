"""What the plugin tests share: the hint when the installable example plugin
(tests/handlers/example_pkg, found through its ``gta_handlers`` entry point) is missing."""
NOT_INSTALLED = "the example plugin is not installed: run `pip install -e tests/handlers/example_pkg`"
