"""Running an ``async def`` handler's coroutine from synchronous code.

Calling an ``async def`` handler only creates a coroutine; unless something awaits it, the
body never runs and the task would be recorded as succeeded without having done anything.
`run_to_end` is what a synchronous caller (a handler thread without an async runner, eager
mode) does with one instead: run it to completion on an event loop of its own.
"""
from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any


def run_to_end(result: Any) -> Any:
    """``result`` itself, or, if it is a coroutine (or another awaitable), what awaiting it returns.

    ``asyncio.run`` refuses to start inside a running loop (eager mode called from an async
    test), so there the coroutine runs on a loop of its own in a helper thread, and this
    thread waits for it.
    """
    if not inspect.isawaitable(result):
        return result
    coroutine = result if inspect.iscoroutine(result) else _await(result)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = asyncio.run(coroutine)
        except BaseException as exc:  # handed to the waiting thread, as if raised there
            outcome["error"] = exc

    helper = threading.Thread(target=run, name="gta-coroutine")
    helper.start()
    helper.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


async def _await(awaitable: Any) -> Any:
    return await awaitable
