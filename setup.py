from setuptools import setup

setup(
    name="gta",
    version="0.1.0",
    description="Reliable asynchronous tasks and transactional messages on your relational database",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["gta_core", "gta_core.metrics", "gta_core.handles", "gta_core.contrib", "gta_core.dashboard",
              "gta_plugins"],
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
        "sqlalchemy": ["sqlalchemy>=2.0"],
        # drivers `asubmit` writes through (any one; SQLAlchemy's async engine needs greenlet)
        "asyncio": ["asyncpg>=0.29", "psycopg[binary]>=3.1", "aiomysql>=0.2", "aiosqlite>=0.20", "greenlet>=3"],
        # Django 6 has django.tasks; on older Django (5.2 is the newest for Python 3.10/3.11) the backport
        "django": ["django>=5.2", "django-tasks>=0.8; python_version < '3.12'"],
        # tracing (gta_plugins.otel): the API the plugin calls, the SDK a process exports spans with
        "otel": ["opentelemetry-api>=1.20", "opentelemetry-sdk>=1.20"],
        "test": ["pytest>=8", "hypothesis>=6", "psycopg2-binary>=2.9", "pymysql>=1.1", "pyyaml>=6",
                 "sqlalchemy>=2.0", "django>=5.2", "django-tasks>=0.8; python_version < '3.12'",
                 "psycopg[binary]>=3.1", "asyncpg>=0.29", "aiomysql>=0.2", "aiosqlite>=0.20", "greenlet>=3",
                 "flask>=3", "flask-sqlalchemy>=3.1", "fastapi>=0.110", "httpx>=0.27",
                 "httpx2>=2",  # starlette >= 1.10 tests through httpx2 (httpx warns)
                 "playwright>=1.40",  # drives the Debian chromium package (tests/test_dashboard_browser.py)
                 # tests/test_otel.py: `opentelemetry-instrument gta-supervisor` exporting OTLP/HTTP
                 "opentelemetry-api>=1.20", "opentelemetry-sdk>=1.20", "opentelemetry-distro>=0.41b0",
                 "opentelemetry-exporter-otlp-proto-http>=1.20"],
        "lint": ["ruff>=0.5", "mypy>=1.10", "opentelemetry-api>=1.20"],  # mypy checks gta_plugins.otel against it
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
            "metrics = gta_plugins.metrics",
            "request_id = gta_plugins.request_id",
            "otel = gta_plugins.otel:plugin",
            "monitor = gta_plugins.monitor",
            "cleanup = gta_plugins.cleanup",
        ],
    },
)
