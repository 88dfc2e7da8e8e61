"""A plugin that kills one background loop, for real, once: loaded with ``GTA_PLUGINS`` in the
supervisor and its workers, it wraps the loop named by ``GTA_TEST_POISON`` so that it raises
``RuntimeError("poisoned")`` the first time it runs while the file ``GTA_TEST_POISON_FILE``
exists (the file is consumed: one death, in one process).

Names: the supervisor's services (``rescuer``, ``janitor``, ``scheduler``, ``listener``: their
next iteration raises) and a worker's threads (``heartbeat``, ``completer``, ``handler``: the
thread raises as it starts).
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from gta_core.supervisor.services.janitor import Janitor
from gta_core.supervisor.services.listener import Listener
from gta_core.supervisor.services.periodic import Scheduler
from gta_core.supervisor.services.rescuer import Rescuer
from gta_core.worker.completer import Completer
from gta_core.worker.heartbeat import Heartbeat
from gta_core.worker.thread_runner import ThreadRunner

TARGETS: dict[str, tuple[type, str]] = {
    "rescuer": (Rescuer, "step"), "janitor": (Janitor, "step"), "scheduler": (Scheduler, "step"),
    "listener": (Listener, "step"), "heartbeat": (Heartbeat, "loop"),
    "completer": (Completer, "loop"), "handler": (ThreadRunner, "loop"),
}


def triggered() -> bool:
    """Whether the trigger file existed; it is gone afterwards (one process wins it)."""
    try:
        os.unlink(os.environ["GTA_TEST_POISON_FILE"])
    except (KeyError, FileNotFoundError):
        return False
    return True


def poisoned(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if triggered():
            raise RuntimeError("poisoned")
        return original(*args, **kwargs)
    return wrapper


if target := os.environ.get("GTA_TEST_POISON"):
    owner, method = TARGETS[target]
    setattr(owner, method, poisoned(getattr(owner, method)))
