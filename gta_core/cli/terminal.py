"""Text from the task table as a terminal may show it: control characters escaped.

Queue names, keys, arguments and errors are written by whoever submits a task. Printed raw,
an escape sequence among them could recolour, retitle or rewrite the operator's terminal, and
a bidirectional override could reorder what a line appears to say. `printable` shows each
such character as a Python-style escape (``\\x1b``, ``\\u202e``); a multi-line text (a
traceback) keeps its line breaks and tabs. Every command of ``gta`` that prints a value from
the database prints it through here (JSON output is escaped by ``json.dumps`` already).
"""
from __future__ import annotations

_CONTROLS = (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))  # C0, DEL, C1
_BIDI = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029)
_ONE_LINE = {code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" for code in (*_CONTROLS, *_BIDI)}
_LINES = {code: escape for code, escape in _ONE_LINE.items() if chr(code) not in "\t\n"}


def printable(value: object, multiline: bool = False) -> str:
    """``str(value)`` with every control character escaped (but tabs and line breaks when
    ``multiline``)."""
    return str(value).translate(_LINES if multiline else _ONE_LINE)
