"""The recipes in examples/ run: through each framework's test client, an order created by
a request gets its receipt task run once under a real supervisor, and a request that fails
after submitting rolls back its order and its task."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gta_core import runtime as runtime_module

from .handles import use_django_database
from .helpers import Env, wait_for

SQLALCHEMY_DRIVERS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql"}
ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "mysql": "mysql+aiomysql"}


def sqlalchemy_url(gta_url: str, drivers: dict[str, str] = SQLALCHEMY_DRIVERS) -> str:
    scheme, rest = gta_url.split(":", 1)
    return f"{drivers[scheme]}:{rest}"


@pytest.fixture
def outbox(env: Env, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the receipt task writes (the supervisor inherits the variable)."""
    path = env.tmp_path / "outbox.txt"
    monkeypatch.setenv("RECEIPTS_OUTBOX", str(path))
    return path


def use_plugins(env: Env, monkeypatch: pytest.MonkeyPatch, plugins: str) -> dict[str, str]:
    """Load ``plugins`` in this process too; the environment a supervisor of them needs."""
    monkeypatch.setenv("GTA_PLUGINS", plugins)
    env.runtime = runtime_module.configure()
    return {"GTA_PLUGINS": plugins}


def order_count(env: Env) -> int:
    return int(env.runtime.db.execute_sql("SELECT COUNT(*) FROM example_orders").fetchone()[0])


def check_order_flow(env: Env, outbox: Path, post: Callable[[dict[str, object]], tuple[int, object]],
                     supervisor_env: dict[str, str]) -> None:
    """One good order, one refused after its submit; the good one's receipt is sent once."""
    status, body = post({"email": "ada@example.com", "total": 30})
    assert status == 201, body
    assert post({"email": "bob@example.com", "total": 0})[0] == 400
    assert order_count(env) == 1
    assert sum(env.store.counts().values()) == 1  # the refused order's task rolled back with it
    env.supervisor(1, extra_env=supervisor_env)
    order_id = body["id"]  # type: ignore[index]
    wait_for(lambda: outbox.exists() and outbox.read_text(), what="the receipt")
    [task] = env.store.list_tasks()
    assert env.wait_final([task["id"]]) == {task["id"]: "succeeded"}
    assert outbox.read_text() == f"receipt for order {order_id}\n"


@pytest.fixture
def orders_table(env: Env) -> Iterator[None]:
    yield
    env.runtime.db.execute_sql("DROP TABLE IF EXISTS example_orders")


def test_flask_sqlalchemy(env: Env, outbox: Path, orders_table: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from examples.flask_sqlalchemy.app import create_app, db
    supervisor_env = use_plugins(env, monkeypatch, "examples.receipts")
    app = create_app(sqlalchemy_url(env.db_url))
    with app.app_context():
        db.create_all()
    client = app.test_client()

    def post(order: dict[str, object]) -> tuple[int, object]:
        response = client.post("/orders", json=order)
        return response.status_code, response.get_json(silent=True)
    try:
        check_order_flow(env, outbox, post, supervisor_env)
    finally:
        with app.app_context():
            db.engine.dispose()


def test_fastapi(env: Env, outbox: Path, orders_table: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient
    from sqlalchemy import create_engine

    from examples.fastapi.app import Base, create_app
    supervisor_env = use_plugins(env, monkeypatch, "examples.receipts")
    tables = create_engine(sqlalchemy_url(env.db_url))
    Base.metadata.create_all(tables)
    tables.dispose()
    app = create_app(sqlalchemy_url(env.db_url, ASYNC_DRIVERS))  # an async endpoint: `await asubmit(session, …)`
    with TestClient(app) as client:  # its lifespan disposes of the async engine
        def post(order: dict[str, object]) -> tuple[int, object]:
            response = client.post("/orders", json=order)
            return response.status_code, response.json()
        check_order_flow(env, outbox, post, supervisor_env)


def test_django(env: Env, outbox: Path, orders_table: None, monkeypatch: pytest.MonkeyPatch) -> None:
    use_django_database("default", env.db_url)
    from django.db import connection
    from django.test import Client

    from examples.django.shop.models import Order
    plugins = "examples.receipts,gta_core.contrib.django"
    supervisor_env = {**use_plugins(env, monkeypatch, plugins), "DJANGO_SETTINGS_MODULE": "examples.django.settings"}
    with connection.schema_editor() as editor:
        editor.create_model(Order)
    client = Client()

    def post(order: dict[str, object]) -> tuple[int, object]:
        response = client.post("/orders", order, content_type="application/json")
        return response.status_code, response.json() if response.status_code == 201 else response.content
    try:
        check_order_flow(env, outbox, post, supervisor_env)
    finally:
        connection.close()
