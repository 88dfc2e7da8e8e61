"""The GTA task the recipes submit: "send" an order's receipt, here a line appended to the
file ``$RECEIPTS_OUTBOX`` (``receipts.txt`` by default). Load it in the web app's process
and the supervisor's: ``GTA_PLUGINS=examples.receipts`` (or ``--plugin examples.receipts``)."""
from __future__ import annotations

import os
from typing import Any

from gta_core import TaskContext, hookimpl, task


def write_receipt(order_id: int) -> None:
    """One line per receipt, in a single append (never interleaved between workers)."""
    with open(os.environ.get("RECEIPTS_OUTBOX", "receipts.txt"), "a") as outbox:
        outbox.write(f"receipt for order {order_id}\n")


@task(max_attempts=5)
def send_receipt(ctx: TaskContext, order_id: int) -> None:
    write_receipt(order_id)


@hookimpl
def gta_handlers() -> list[Any]:
    return [send_receipt]
