"""Small plugin modules that are wrong on purpose (and a few helpers), for tests/unit/test_plugins.py."""
