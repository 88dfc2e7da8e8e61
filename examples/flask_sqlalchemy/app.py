"""Flask + Flask-SQLAlchemy: the order and its receipt task commit together, or neither does.

Run it as examples/README.md says: ``GTA_PLUGINS=examples.receipts flask --app
examples.flask_sqlalchemy.app run`` with ``DATABASE_URL`` and ``GTA_DATABASE_URL`` naming one
database, beside ``gta migrate`` and ``gta-supervisor --plugin examples.receipts``. It creates
its table (``example_orders``) at start.
"""
from __future__ import annotations

import os
from typing import Any

from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Engine, String, event, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from werkzeug.exceptions import BadRequest

import gta_core


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Order(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "example_orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    total: Mapped[int]


def create_app(database_url: str | None = None) -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = from_working_directory(database_url or os.environ["DATABASE_URL"])
    db.init_app(app)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":  # transactions wait for SQLite's write lock at BEGIN
            begin_immediate(db.engine)
        db.create_all()  # the orders' table, if missing

    @app.post("/orders")
    def create_order() -> tuple[dict[str, Any], int]:
        data = request.get_json()
        order = Order(email=data["email"], total=data["total"])
        db.session.add(order)
        db.session.flush()  # the order's id, inside the session's transaction
        gta_core.submit(db.session, "send_receipt", {"order_id": order.id})
        if order.total <= 0:  # a failure after the submit: the request's rollback takes the task too
            raise BadRequest("total must be positive")
        db.session.commit()
        return {"id": order.id}, 201

    return app


def from_working_directory(url: str) -> str:
    """A relative SQLite path as GTA reads it, from the working directory: Flask-SQLAlchemy
    would put it under the app's ``instance/`` folder, a different database than GTA's."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:" \
            or os.path.isabs(parsed.database) or parsed.database.startswith("file:"):
        return url
    return parsed.set(database=os.path.abspath(parsed.database)).render_as_string(hide_password=False)


def begin_immediate(engine: Engine) -> None:
    """SQLite: SQLAlchemy begins every transaction itself, ``BEGIN IMMEDIATE`` (docs/integrations.md)."""
    @event.listens_for(engine, "connect")
    def no_implicit_begin(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
