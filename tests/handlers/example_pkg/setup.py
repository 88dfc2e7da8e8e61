"""A tiny installable GTA plugin, for the entry-point discovery tests
(``pip install -e tests/handlers/example_pkg``)."""
from setuptools import setup

setup(
    name="gta-example-pkg",
    version="0.1.0",
    description="Example GTA plugin exposing one task through the gta_handlers entry point group",
    packages=["gta_example_pkg"],
    # no install_requires: tox installs this before GTA itself, and "gta" must never be
    # fetched from an index (it is the local checkout).
    entry_points={"gta_handlers": ["example = gta_example_pkg.tasks"]},
)
