"""runtel.query.report.script_json: the page's data as JSON that no recorded string can break out of."""

from __future__ import annotations

import json
import math

import pytest

from runtel.query.report import script_json

HOSTILE = ["<!-- <script>", "</script><script>alert(1)</script>", "-->", "<![CDATA[", "a & b", "</SCRIPT >",
           "line\u2028sep\u2029end", "<\\/script>", "é ✓ 😀"]


@pytest.mark.parametrize("value", HOSTILE)
def test_no_markup_character_is_left_raw_and_the_value_round_trips(value: str) -> None:
    data = {"config": {value: value}, "list": [value, 1, None, True]}
    text = script_json(data)
    assert not any(c in text for c in "<>&\u2028\u2029"), text
    assert json.loads(text) == data


def test_escapes_are_the_json_unicode_ones() -> None:
    assert script_json({"a": "<!--&-->"}) == '{"a":"\\u003c!--\\u0026--\\u003e"}'


def test_hostile_numbers_are_spelled_out() -> None:
    def reject(token: str) -> None:
        raise AssertionError(f"bare {token}")

    text = script_json({"x": [math.nan, math.inf, -math.inf, 1.5], "s": "<b>"})
    assert json.loads(text, parse_constant=reject) == {"x": ["NaN", "Infinity", "-Infinity", 1.5], "s": "<b>"}
    assert "<" not in text


def test_other_types_are_written_as_their_text_escaped_too() -> None:
    text = script_json({"p": frozenset({"<b>"})})
    assert json.loads(text) == {"p": "frozenset({'<b>'})"} and "<" not in text
