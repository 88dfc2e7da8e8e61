"""A plugin module that cannot be imported."""
raise RuntimeError("raises_on_import: this plugin is broken at import time")
