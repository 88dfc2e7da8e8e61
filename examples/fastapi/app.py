"""FastAPI (a sync endpoint) + SQLAlchemy: the order and its receipt task commit together.
(No ``from __future__ import annotations``: FastAPI reads the endpoint's annotations at run time.)

Run: ``DATABASE_URL=sqlite:///shop.db GTA_DATABASE_URL=sqlite:///shop.db GTA_PLUGINS=examples.receipts
uvicorn examples.fastapi.app:app`` beside ``gta migrate`` and
``gta-supervisor --plugin examples.receipts`` (one database for the orders and the tasks).
"""
import os
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

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
    engine = create_engine(database_url or os.environ["DATABASE_URL"])
    app = FastAPI()

    def session() -> Iterator[Session]:
        with Session(engine) as opened:
            yield opened

    @app.post("/orders", status_code=201)
    def create_order(new: NewOrder, db: Annotated[Session, Depends(session)]) -> dict[str, int]:
        with db.begin():  # commits on success; any exception rolls back the order and the task
            order = Order(email=new.email, total=new.total)
            db.add(order)
            db.flush()
            gta_core.submit(db, "send_receipt", {"order_id": order.id})
            if order.total <= 0:
                raise HTTPException(400, "total must be positive")
        return {"id": order.id}

    app.state.engine = engine
    return app


if "DATABASE_URL" in os.environ:  # `uvicorn examples.fastapi.app:app`
    app = create_app()
