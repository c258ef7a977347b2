"""Edge conditions: vocabulary, expressions, typed three-valued semantics, type checks, limits, speed."""

from __future__ import annotations

import time
from typing import Any

import pytest

from swarm.errors import InvalidSpec
from swarm.workflow.condition_syntax import ConditionError
from swarm.workflow.conditions import parse_condition

STATES = ("done", "failed", "skipped", "cancelled")


@pytest.mark.parametrize(
    ("text", "fires_in"),
    [
        ("SUCCESS", {"done"}),
        ("FAILURE", {"failed", "cancelled"}),
        ("ALWAYS", set(STATES)),
        ("SKIPPED", {"skipped"}),
        ("success", {"done"}),
        ("FAILURE OR SKIPPED", {"failed", "cancelled", "skipped"}),
        ("NOT SUCCESS", {"failed", "cancelled", "skipped"}),
    ],
)
def test_state_words(text: str, fires_in: set[str]) -> None:
    cond = parse_condition(text)
    assert {s for s in STATES if cond.evaluate(s, {})} == fires_in


SEED = 'SUCCESS AND output.rowCount > 100 AND output.region in ["EU", "US"]'


@pytest.mark.parametrize(
    ("outputs", "state", "expected"),
    [
        ({"rowCount": 150, "region": "EU"}, "done", True),
        ({"rowCount": 150, "region": "EU"}, "failed", False),
        ({"rowCount": 50, "region": "EU"}, "done", False),
        ({"rowCount": 150, "region": "APAC"}, "done", False),
        ({"rowCount": 150.5, "region": "US"}, "done", True),
        ({"region": "EU"}, "done", False),  # missing output
        ({"rowCount": "150", "region": "EU"}, "done", False),  # string vs number
        ({"rowCount": True, "region": "EU"}, "done", False),  # a boolean is not a number
    ],
)
def test_seed_style_expression(outputs: dict[str, Any], state: str, expected: bool) -> None:
    assert parse_condition(SEED).evaluate(state, outputs) is expected


def test_bare_expression_means_success_and() -> None:
    cond = parse_condition("output.ok == true")
    assert cond.text == "SUCCESS AND output.ok == true"
    assert cond.evaluate("done", {"ok": True})
    assert not cond.evaluate("failed", {"ok": True})


@pytest.mark.parametrize(
    ("text", "outputs", "expected"),
    [
        ("output.x != 1", {"x": "a"}, False),  # incompatible: unknown, not true
        ("NOT (output.x == 1)", {"x": "a"}, False),  # negating unknown stays unknown
        ("NOT (output.x == 1)", {}, False),
        ("output.x == 1 OR output.y == 2", {"y": 2}, True),  # unknown OR true is true
        ("output.x == 1 AND output.y == 2", {"y": 3}, False),
        ("output.x == null", {"x": None}, True),
        ("output.x != null", {"x": 5}, True),
        ("exists(output.x)", {"x": 0}, True),
        ("exists(output.x)", {"x": None}, False),
        ("NOT exists(output.x)", {}, True),
        ("output.a.b[1] == 'z'", {"a": {"b": ["y", "z"]}}, True),
        ("output.a.b[5] == 'z'", {"a": {"b": ["y", "z"]}}, False),
        ("output.a.b.c == 'z'", {"a": {"b": "str"}}, False),
        ('outputs["odd-name"] >= 2', {"odd-name": 2}, True),
        ("len(output.items) == 3", {"items": [1, 2, 3]}, True),
        ("len(output.items) > 0", {"items": 7}, False),
        ("'north' in output.metrics", {"metrics": {"north": 1.5}}, True),
        ("output.tag not in output.tags", {"tag": "a", "tags": ["b", "c"]}, True),
        ("output.flag", {"flag": True}, True),
        ("!output.flag", {"flag": False}, True),
        ("output.flag", {"flag": 1}, False),
        ("output.n in [1, 2.5, 'x']", {"n": 2.5}, True),
        ("output.n in [1, 2]", {"n": True}, False),
        ("output.v == [1, 2]", {"v": [1, 2]}, True),
        ("output.name < 'm' && output.n >= -3", {"name": "abc", "n": -3}, True),
        ("output.x > 1 || FAILURE", {"x": 0}, False),
        ("output.x < output.y", {"x": "a", "y": 2}, False),
    ],
)
def test_typed_three_valued_semantics(text: str, outputs: dict[str, Any], expected: bool) -> None:
    assert parse_condition(text).evaluate("done", outputs) is expected


def test_failure_branch_can_read_outputs() -> None:
    cond = parse_condition("FAILURE AND output.code == 'OOM'")
    assert cond.evaluate("failed", {"code": "OOM"})
    assert not cond.evaluate("done", {"code": "OOM"})


def test_huge_output_list_is_unknown_not_slow() -> None:
    cond = parse_condition("5 in output.xs")
    assert cond.evaluate("done", {"xs": list(range(10))})
    assert not cond.evaluate("done", {"xs": list(range(1_000_000))})


def test_outputs_referenced_and_canonical_text_round_trip() -> None:
    cond = parse_condition("(output.a > 1 && exists(outputs.b.c)) || NOT len(output.d[0]) == 2 or FAILURE")
    assert cond.outputs_referenced == frozenset({"a", "b", "d"})
    assert cond.text == "output.a > 1 AND exists(output.b.c) OR NOT len(output.d[0]) == 2 OR FAILURE"
    assert parse_condition(cond.text) == cond
    escaped = parse_condition(r"output.s == 'a\'b\n\u00e9'")
    assert parse_condition(escaped.text).evaluate("done", {"s": "a'b\né"})


def test_typecheck_against_schema_types() -> None:
    types = {
        "region": "STRING",
        "rowCount": "INTEGER",
        "metrics": "MAP<string, number>",
        "tags": "ARRAY<string>",
    }
    assert parse_condition(SEED).typecheck(types) == []
    problems = parse_condition("output.region == 5").typecheck(types)
    assert len(problems) == 1
    assert "STRING" in problems[0]
    assert "NUMBER" in problems[0]
    assert "character 15" in problems[0]
    assert parse_condition("output.missing > 1").typecheck(types)[0].startswith("output.missing at character")
    assert parse_condition("output.metrics.north > 'x'").typecheck(types)
    assert parse_condition("output.metrics.north > 2").typecheck(types) == []
    assert parse_condition("5 in output.tags").typecheck(types)
    assert parse_condition("output.region.x == 'a'").typecheck(types)
    assert parse_condition("output.rowCount").typecheck(types)  # not a boolean
    assert parse_condition("output.tags[0] == 'eu'").typecheck(types) == []
    # Unknown types are not errors.
    assert parse_condition("output.v.x == 1 AND output.v > 'a'").typecheck({"v": "DATE_RANGE"}) == []


@pytest.mark.parametrize(
    ("text", "fragment", "column"),
    [
        ("", "empty condition", 1),
        ("output.x = 1", "'=' is not an operator", 10),
        ("rowCount > 1", "unknown name 'rowCount'", 1),
        ("output.x > ", "expected a value", 12),
        ("(output.x > 1", "expected ')'", 14),
        ("1 < 2 < 3", "do not chain", 7),
        ('"abc', "unterminated string", 1),
        ("output", "expected an output name", 1),
        ("exists(1)", "exists() takes an output reference", 8),
        ("[output.x] == 1", "only literals", 2),
        ("output.x > 1 2", "unexpected 2", 14),
        ("output.x ~ 1", "unexpected character", 10),
        ("output.x == 1e999", "out of range", 13),
        (r"output.x == 'a\q'", "unknown escape", 15),
        ("SUCCESS AND", "expected a value", 12),
    ],
)
def test_bad_conditions_say_what_and_where(text: str, fragment: str, column: int) -> None:
    with pytest.raises(ConditionError) as info:
        parse_condition(text)
    assert fragment in str(info.value)
    assert info.value.column == column
    assert f"at character {column}" in str(info.value)
    assert isinstance(info.value, InvalidSpec)


def test_input_bounds() -> None:
    with pytest.raises(ConditionError, match="longer than 1000"):
        parse_condition("output.x == 1 AND " * 60 + "SUCCESS")
    with pytest.raises(ConditionError, match="more than 200 tokens"):
        parse_condition("&&".join(["1"] * 101))
    with pytest.raises(ConditionError, match="deeper than 32"):
        parse_condition("(" * 33 + "SUCCESS" + ")" * 33)
    with pytest.raises(ConditionError, match="deeper than 32"):
        parse_condition("NOT " * 33 + "SUCCESS")
    assert parse_condition("(" * 32 + "SUCCESS" + ")" * 32).evaluate("done", {})


def test_bad_parent_state_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="parent_state"):
        parse_condition("SUCCESS").evaluate("running", {})


def test_evaluation_is_fast() -> None:
    cond = parse_condition(SEED)
    outputs = {"rowCount": 150, "region": "EU"}
    start = time.perf_counter()
    for _ in range(100_000):
        cond.evaluate("done", outputs)
    # About 1 us each on a laptop; a generous bound keeps slow CI machines green.
    assert time.perf_counter() - start < 2.0
