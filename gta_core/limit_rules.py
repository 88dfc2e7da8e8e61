"""The values of a limit and their checks: ``concurrency`` (a positive int) and ``rate_limit``
(``"N/s"``, ``"N/m"``, ``"N/h"``), shared by ``@task``, `gta_core.limit_queue` and ``gta limit``,
so a bad value is refused the same way, with the same words, wherever it is given."""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from .errors import InvalidLimit

#: seconds of each rate unit
UNITS = {"s": 1, "m": 60, "h": 3600}
#: the largest count or concurrency an INTEGER column holds
INT_MAX = 2**31 - 1
_RATE = re.compile(r"^\s*(\d+)\s*/\s*([A-Za-z]*)\s*$")


@dataclasses.dataclass(frozen=True)
class Rate:
    """At most ``count`` task starts per fixed window of ``period`` seconds."""

    count: int
    period: int

    def __str__(self) -> str:
        unit = {seconds: unit for unit, seconds in UNITS.items()}.get(self.period)
        return f"{self.count}/{unit}" if unit else f"{self.count}/{self.period}s"


def parse_rate(text: Any) -> Rate:
    """``"100/m"`` → Rate(100, 60); `InvalidLimit` naming the value and the rule it broke."""
    if isinstance(text, Rate):
        return text
    if not isinstance(text, str):
        raise InvalidLimit(f"rate_limit {text!r}: must be a string like '100/m'")
    match = _RATE.match(text)
    if match is None:
        raise InvalidLimit(f"rate_limit {text!r}: must be a count, '/', and a unit s, m or h (like '100/m')")
    count, unit = int(match.group(1)), match.group(2)
    if unit not in UNITS:
        raise InvalidLimit(f"rate_limit {text!r}: unit must be s, m or h")
    if not 1 <= count <= INT_MAX:
        raise InvalidLimit(f"rate_limit {text!r}: count must be from 1 to {INT_MAX}")
    return Rate(count, UNITS[unit])


def check_concurrency(value: Any) -> int:
    """``value`` when it is a positive int (not a bool), else `InvalidLimit` naming it."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= INT_MAX:
        raise InvalidLimit(f"concurrency {value!r}: must be a positive int (at most {INT_MAX})")
    return value


def concurrency_key_value(value: Any) -> str | None:
    """What the ``concurrency_key`` column stores for a task's key value: a string as it is, None
    as NULL, anything else as its JSON text (``42`` → ``"42"``)."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


__all__ = ["Rate", "UNITS", "check_concurrency", "concurrency_key_value", "parse_rate"]
