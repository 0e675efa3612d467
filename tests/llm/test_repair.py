"""Almost-JSON tool arguments: repaired where safe, refused with a reason where not."""

from __future__ import annotations

import pytest

from autosci_hpc.llm.repair import repair_arguments

REPAIRED = [
    ('{"a": 1}', {"a": 1}, ""),
    ('```json\n{"a": 1}\n```', {"a": 1}, "code fence"),
    ('Here is the call: {"a": {"b": [1, 2]}} Thanks.', {"a": {"b": [1, 2]}}, "surrounding text"),
    ('{"a": [1, 2,], "b": 3,}', {"a": [1, 2], "b": 3}, "trailing commas"),
    ('{"ok": True, "x": None, "s": "True, None,}"}', {"ok": True, "x": None, "s": "True, None,}"}, "True/False/None"),
    ('{"s": "a,}"}', {"s": "a,}"}, ""),  # nothing outside strings to repair
]

REFUSED = [
    ('{"a": 1, "b": [1, 2', "truncated"),
    ("{'a': 1}", "not valid JSON"),
    ('{"a": 1} {"b": 2}', "several"),
    ("[1, 2]", "JSON object"),
    ('{"a": NaN}', "not valid JSON"),
    ('{"a": 1 /* one */}', "not valid JSON"),
    ("no object at all", "not one JSON object"),
    ("{" * 100_000 + "}" * 100_000, "not valid JSON"),
]


@pytest.mark.parametrize("raw,expected,note", REPAIRED)
def test_safe_repairs(raw: str, expected: dict, note: str) -> None:
    result = repair_arguments(raw)
    assert result.value == expected
    assert note in result.reason if note else result.notes == []


@pytest.mark.parametrize("raw,why", REFUSED)
def test_unsafe_inputs_are_refused_with_a_reason(raw: str, why: str) -> None:
    result = repair_arguments(raw)
    assert result.value is None
    assert why in result.reason


def test_the_backends_take_repaired_arguments_and_refuse_the_rest() -> None:
    from autosci_hpc.llm.chat import tool_call

    fenced = tool_call("c1", "critique", '```json\n{"verdict": "approve", "reasons": "ok",}\n```', 0)
    assert fenced.input == {"verdict": "approve", "reasons": "ok"} and not fenced.parse_error
    broken = tool_call("c2", "critique", '{"verdict": "approve", "reasons": "o', 0)
    assert broken.input == {} and "truncated" in broken.parse_error
