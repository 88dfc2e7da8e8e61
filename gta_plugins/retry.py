"""The default retry policy: capped exponential backoff with full jitter on its upper half.

Attempt n (1-based, already counted) waits between half and all of
``min(retry_cap, retry_base * 2 ** (n - 1))`` seconds; the jitter spreads a burst of
failures so retries do not arrive in lockstep. No delay (so: fail) once ``max_attempts``
attempts were made.
"""
from __future__ import annotations

import random
from typing import Any

from gta_core import hookimpl
from gta_core.runtime import Runtime


def backoff(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    ceiling = min(cap, base * 2 ** min(max(attempt - 1, 0), 62))
    return (rng or random).uniform(ceiling / 2, ceiling)


@hookimpl(trylast=True)
def gta_retry_delay(task: Any, error: BaseException, gta: Runtime) -> float | None:
    if task.attempts >= task.max_attempts:
        return None
    settings = gta.settings
    return backoff(task.attempts, settings.retry_base, settings.retry_cap)
