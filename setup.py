from setuptools import setup

setup(
    name="gta",
    version="0.1.0",
    description="Reliable asynchronous tasks and transactional messages on your relational database",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["gta_core", "gta_core.metrics", "gta_core.dashboard", "gta_plugins"],
    package_data={"gta_core": ["py.typed"], "gta_core.dashboard": ["templates/*.html", "static/*"],
                  "gta_plugins": ["py.typed"]},
    install_requires=[
        "peewee>=3.17",
        "pluggy>=1.3",
        "multiprocess>=0.70.15",
        "prometheus-client>=0.17",
    ],
    extras_require={
        "postgres": ["psycopg2-binary>=2.9"],
        "mysql": ["pymysql>=1.1"],
        "test": ["pytest>=8", "hypothesis>=6", "psycopg2-binary>=2.9", "pymysql>=1.1", "pyyaml>=6",
                 "playwright>=1.40"],  # drives the Debian chromium package (tests/test_dashboard_browser.py)
        "lint": ["ruff>=0.5", "mypy>=1.10"],
        # peers for benchmarks/compare.py (procrastinate, pgqueuer on PostgreSQL; huey; Celery on Redis)
        "bench": ["procrastinate", "psycopg[binary]", "pgqueuer", "asyncpg", "huey", "celery[redis]", "redis",
                  "psycopg2-binary>=2.9"],
    },
    entry_points={
        "console_scripts": [
            "gta-supervisor = gta_core.cli:supervisor_main",
            "gta = gta_core.cli:main",
        ],
        "gta_handlers": [
            "retry = gta_plugins.retry",
            "demo = gta_plugins.demo",
            "metrics = gta_plugins.metrics",
            "request_id = gta_plugins.request_id",
            "monitor = gta_plugins.monitor",
            "cleanup = gta_plugins.cleanup",
        ],
    },
)
