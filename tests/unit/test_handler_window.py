"""`HandlerWindow`: an async handler runs inside its attempt's asyncio task, so a timeout or a
cancel may cancel that task only while the handler runs, never the outcome's write after it."""
from __future__ import annotations

import asyncio
import sys

import pytest

from gta_core.worker.async_runner import HandlerWindow


def test_a_cancel_that_comes_after_the_handler_returned_leaves_the_outcomes_write_alone() -> None:
    async def attempt() -> str:
        current = asyncio.current_task()
        assert current is not None
        window = HandlerWindow(current)
        await asyncio.sleep(0)  # the handler
        window.close()
        window.cancel()  # a cancel event, and the timeout, after it returned
        window.expire()
        await asyncio.sleep(0.01)  # the outcome's write
        return "written"

    assert asyncio.run(attempt()) == "written"


def test_the_timeout_cancels_the_handler_while_it_runs() -> None:
    async def attempt() -> tuple[bool, bool]:
        current = asyncio.current_task()
        assert current is not None
        window = HandlerWindow(current)
        asyncio.get_running_loop().call_later(0.01, window.expire)
        try:
            await asyncio.sleep(5)  # the handler
            cancelled = False
        except asyncio.CancelledError:
            cancelled = True
        window.close()
        return cancelled, window.expired

    assert asyncio.run(attempt()) == (True, True)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Task.uncancel and asyncio.timeout are Python 3.11+")
def test_a_cancellation_the_handler_caught_is_taken_back_so_later_timeouts_still_work() -> None:
    async def attempt() -> tuple[int, str]:
        current = asyncio.current_task()
        assert current is not None
        window = HandlerWindow(current)
        asyncio.get_running_loop().call_soon(window.cancel)
        try:
            await asyncio.sleep(5)  # the handler, which swallows its cancellation
        except asyncio.CancelledError:
            pass
        window.close()
        try:
            async with asyncio.timeout(0.01):  # a plugin's own timeout, around the outcome's write
                await asyncio.sleep(5)
        except TimeoutError:
            return current.cancelling(), "timed out"
        return current.cancelling(), "not timed out"

    assert asyncio.run(attempt()) == (0, "timed out")
