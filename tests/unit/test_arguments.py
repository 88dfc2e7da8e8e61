"""Encoding and bounding a submit's arguments: the fast paths give what the full checks give."""
from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gta_core.errors import InvalidArguments
from gta_core.tasks import _ARGS_ENCODER, _encode, dump_args
from gta_core.validation import _bounded

#: what arguments may hold, JSON's own values and what JSON cannot carry faithfully
leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5),
                   st.sampled_from([math.nan, math.inf, b"x", object(), 10**400]))
values = st.recursive(leaves, lambda children: st.one_of(
    st.lists(children, max_size=3), st.tuples(children),
    st.dictionaries(st.one_of(st.text(max_size=3), st.integers(), st.none()), children, max_size=3)), max_leaves=12)


def _outcome(encode: Any, value: Any) -> tuple[str, str]:
    try:
        return "text", encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        return type(exc).__name__, str(exc)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=3), values, max_size=4))
def test_the_fast_encoder_writes_and_refuses_as_the_full_one(value: dict[str, Any]) -> None:
    assert _outcome(_encode, value) == _outcome(_ARGS_ENCODER.encode, value)


def test_a_cycle_is_named_as_one() -> None:
    cycle: dict[str, Any] = {}
    cycle["self"] = [cycle]
    with pytest.raises(InvalidArguments, match="Circular reference detected"):
        dump_args("k", cycle)


RUNTIME = SimpleNamespace(settings=SimpleNamespace(args_max_depth=3, args_max_bytes=10_000))


@pytest.mark.parametrize("value", [{"a": {"b": {"c": {}}}}, {"a": [[[1]]]}, {"s": "{", "a": {"b": [{"c": 1}]}}])
def test_nesting_beyond_the_limit_is_refused_whatever_brackets_it_uses(value: dict[str, Any]) -> None:
    with pytest.raises(InvalidArguments, match="args_max_depth"):
        _bounded(RUNTIME, "k", value, "arguments")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [{"s": "[[[[{{{{"}, {"a": {"b": [1]}}, {"n": 1}, {}, None])
def test_nesting_within_the_limit_passes_brackets_in_strings_included(value: dict[str, Any] | None) -> None:
    assert _bounded(RUNTIME, "k", value, "arguments") == _ARGS_ENCODER.encode(value or {})  # type: ignore[arg-type]
