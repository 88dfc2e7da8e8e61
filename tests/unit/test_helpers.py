"""The process helpers other tests rely on, against the races a real process can win."""
from __future__ import annotations

import io
from typing import Any

import pytest

from ..support import helpers


class _GoneOnRead(io.RawIOBase):
    """A /proc file opened just before its process exited: the kernel answers ESRCH on read."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        raise ProcessLookupError(3, "No such process")


@pytest.mark.parametrize("error", [FileNotFoundError, ProcessLookupError])
def test_proc_readers_treat_a_process_that_exits_meanwhile_as_gone(monkeypatch: pytest.MonkeyPatch,
                                                                 error: type[OSError]) -> None:
    # Mocked: the exit cannot be timed to fall between open and read in a real process.
    def open_gone(path: str, mode: str = "r") -> Any:
        if error is FileNotFoundError:
            raise FileNotFoundError(2, "No such file or directory", path)
        raw = _GoneOnRead()
        return raw if "b" in mode else io.TextIOWrapper(io.BufferedReader(raw))

    monkeypatch.setattr(helpers, "open", open_gone, raising=False)
    assert helpers.cmdline(12345) == ""
    assert helpers.children(12345) == []
    assert helpers.is_alive(12345) is False
