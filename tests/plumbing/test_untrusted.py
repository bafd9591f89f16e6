"""The bounded JSON parser and the 64-bit range check every service reads
hostile input through: within the limits it is json.loads; past any limit it
refuses with INVALID_ARGUMENT naming the field and the limit, before the
recursive decoder sees the text, in time linear in the text."""

from __future__ import annotations

import json
import time

import pytest

from plumbing import errors, untrusted


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def refusal(text: str | bytes, **limits: int) -> errors.InvalidArgument:
    with pytest.raises(errors.InvalidArgument) as caught:
        untrusted.parse_json(text, "spec.algorithm_parameters_json", **limits)
    assert caught.value.field == "spec.algorithm_parameters_json"
    assert caught.value.message.startswith("spec.algorithm_parameters_json ")
    return caught.value


@pytest.mark.parametrize(
    "text",
    [
        '{"a": [1, 2.5, true, null, {"b": "c"}], "d": ""}',
        '"a string with [[[ {{{ , and an escaped \\" quote ]]]"',
        '["\\\\", "\\"[", "]\\"", "\\u005b"]',
        "[]",
        "  {}  ",
        "42",
    ],
)
def test_within_the_limits_it_decodes_as_json_loads_does(text: str):
    assert untrusted.parse_json(text, "field") == json.loads(text)
    assert untrusted.parse_json(text.encode(), "field") == json.loads(text)


def test_depth_is_refused_past_the_limit_naming_the_field_and_the_limit():
    assert untrusted.parse_json(nested(64), "f") == json.loads(nested(64))
    error = refusal(nested(65))
    assert error.code == "json_too_deep"
    assert "65 levels deep" in error.message and "at most 64 levels" in error.message
    objects = '{"a":' * 65 + "1" + "}" * 65
    assert refusal(objects).code == "json_too_deep"
    assert refusal(nested(10), max_depth=9).code == "json_too_deep"


def test_brackets_inside_strings_are_not_nesting():
    text = json.dumps(["[" * 10_000, "{" * 10_000, '\\"[[[', "]]]"])
    assert untrusted.parse_json(text, "f") == json.loads(text)


def test_a_million_levels_are_refused_quickly_without_recursing():
    started = time.monotonic()
    error = refusal(nested(1_000_000))
    assert error.code == "json_too_deep" and "1000000 levels deep" in error.message
    assert refusal("[" * 1_000_000).code == "json_too_deep"  # never closed: still refused, not decoded
    assert time.monotonic() - started < 2.0


def test_length_is_refused_past_the_limit():
    error = refusal('"' + "x" * 100 + '"', max_length=101)
    assert error.code == "json_too_long"
    assert "102 characters long" in error.message and "at most 101" in error.message
    assert "bytes long" in refusal(b"[1, 2, 3]", max_length=8).message
    assert untrusted.parse_json('"' + "x" * 99 + '"', "f", max_length=101) == "x" * 99


def test_keys_and_items_are_refused_past_the_limit():
    assert untrusted.parse_json(json.dumps(list(range(10))), "f", max_items=11) == list(range(10))
    error = refusal(json.dumps(list(range(100))), max_items=50)
    assert error.code == "json_too_many_items" and "at most 50" in error.message
    many_keys = json.dumps({f"k{i}": i for i in range(100)})
    assert refusal(many_keys, max_items=50).code == "json_too_many_items"
    assert refusal(json.dumps([[]] * 100), max_items=50).code == "json_too_many_items"
    # the default: a document of 150,000 zeros is short, shallow, and refused
    assert refusal("[0" + ",0" * 150_000 + "]").code == "json_too_many_items"


@pytest.mark.parametrize(
    "text",
    [
        '"' + '\\"' * 500_000,  # a string that never ends, full of escaped quotes
        '"' * 1_000_001,  # a million quotes
        "[" + '"\\' * 300_000,
    ],
)
def test_pathological_strings_take_linear_time(text: str):
    started = time.monotonic()
    with pytest.raises(ValueError):
        untrusted.parse_json(text, "f")
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("text", ["{", "[1,]", "nope", '"unterminated', "", b"\xff\xfe"])
def test_text_that_is_not_json_raises_value_error_for_the_caller_to_answer(text: str | bytes):
    with pytest.raises(ValueError):
        untrusted.parse_json(text, "f")


def test_int64_passes_what_fits_and_refuses_what_does_not_naming_the_field():
    assert untrusted.int64(0, "offset") == 0
    assert untrusted.int64(2**63 - 1, "offset") == 2**63 - 1
    for value in (2**63, 2**64 - 1):
        with pytest.raises(errors.InvalidArgument) as caught:
            untrusted.int64(value, "offset")
        assert caught.value.field == "offset" and caught.value.code == "number_out_of_range"
        assert f"offset {value} is too large" in caught.value.message
        assert "at most 9223372036854775807" in caught.value.message
