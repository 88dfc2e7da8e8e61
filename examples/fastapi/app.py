"""FastAPI (an async endpoint) + SQLAlchemy's ``AsyncSession``: the order and its receipt task
commit together, and the submit never blocks the event loop (``await gta_core.asubmit``).
(No ``from __future__ import annotations``: FastAPI reads the endpoint's annotations at run time.)

Run it as examples/README.md says: ``GTA_PLUGINS=examples.receipts uvicorn examples.fastapi.app:app``
with ``DATABASE_URL`` (``sqlite+aiosqlite://…``, ``postgresql+asyncpg://…`` or
``mysql+aiomysql://…``) and ``GTA_DATABASE_URL`` naming one database, beside ``gta migrate`` and
``gta-supervisor --plugin examples.receipts``. It creates its table (``example_orders``) at start.
"""
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import Engine, String, event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import gta_core


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "example_orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    total: Mapped[int]


class NewOrder(BaseModel):
    email: str
    total: int


def create_app(database_url: str | None = None) -> FastAPI:
    engine = create_async_engine(database_url or os.environ["DATABASE_URL"])
    if engine.dialect.name == "sqlite":  # transactions wait for SQLite's write lock at BEGIN
        begin_immediate(engine.sync_engine)
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with engine.begin() as connection:  # the orders' table, if missing
            await connection.run_sync(Base.metadata.create_all)
        yield
        await engine.dispose()  # on the loop that opened the pool's connections

    app = FastAPI(lifespan=lifespan)

    async def session() -> AsyncIterator[AsyncSession]:
        async with sessions() as opened:
            yield opened

    @app.post("/orders", status_code=201)
    async def create_order(new: NewOrder, db: Annotated[AsyncSession, Depends(session)]) -> dict[str, int]:
        async with db.begin():  # commits on success; any exception rolls back the order and the task
            order = Order(email=new.email, total=new.total)
            db.add(order)
            await db.flush()
            await gta_core.asubmit(db, "send_receipt", {"order_id": order.id})
            if order.total <= 0:
                raise HTTPException(400, "total must be positive")
        return {"id": order.id}

    app.state.engine = engine
    return app


def begin_immediate(engine: Engine) -> None:
    """SQLite: SQLAlchemy begins every transaction itself, ``BEGIN IMMEDIATE`` (docs/integrations.md)."""
    @event.listens_for(engine, "connect")
    def no_implicit_begin(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


if "DATABASE_URL" in os.environ:  # `uvicorn examples.fastapi.app:app`
    app = create_app()
