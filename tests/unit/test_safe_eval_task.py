"""The `python_eval` task's guards: validate raises only InvalidPayload, run only Fatal, results capped."""

from __future__ import annotations

import contextlib
import inspect
import re
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.errors import Fatal, InvalidPayload, SwarmError
from swarm.plugins import python_eval as module
from swarm.plugins.python_eval import MAX_BUDGET, MAX_RESULT_BYTES, to_json
from swarm.plugins.python_eval import handler as python_eval
from swarm.registry import Registry
from swarm.taskapi import TaskContext

QUICK = 1.0  # seconds; every refusal below takes milliseconds, this leaves room for a loaded machine


@pytest.fixture
def ctx(tmp_path: Path) -> TaskContext:
    return TaskContext("n1", "t1", 1, str(tmp_path))


def fails(ctx: TaskContext, payload: dict[str, Any]) -> str:
    """Run `payload`, expecting a quick `Fatal`; return its message."""
    started = time.perf_counter()
    with pytest.raises(Fatal) as caught:
        python_eval.run(ctx, payload)
    assert time.perf_counter() - started < QUICK, payload
    return str(caught.value)


# -- validate: nothing but InvalidPayload, whatever the source ----------------------------------------------
NESTED = [
    "(" * 450 + "1" + ")" * 450,
    "-" * 450 + "1",
    "[" * 450 + "]" * 450,
    "{'a': " * 300 + "1" + "}" * 300,
    "not " * 2000 + "1",
    "1 + " * 2400 + "1",
    "x" + ".count(1)" * 1000,
]


@pytest.mark.parametrize("source", NESTED, ids=lambda s: f"{s[:10]}...{len(s)}")
def test_validate_turns_every_nesting_failure_into_one_clear_error(source: str) -> None:
    started = time.perf_counter()
    too_deep = re.escape("python_eval: expression nested too deeply (limit 100)")
    with pytest.raises(InvalidPayload, match=too_deep):
        python_eval.validate({"expression": source, "variables": {"x": []}})
    assert time.perf_counter() - started < QUICK


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="([{-~+*1x, :'}])notfrin", max_size=3000))
def test_validate_raises_nothing_but_invalid_payload(source: str) -> None:
    with contextlib.suppress(InvalidPayload):
        python_eval.validate({"expression": source, "variables": {"x": 1}})


def test_validate_guards_against_unexpected_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    for error, message in (
        (RecursionError, "expression nested too deeply (limit 100)"),
        (MemoryError, "out of memory while checking the expression"),
        (KeyError, "could not be checked"),
    ):

        def broken(*args: Any, error: type[Exception] = error) -> None:
            raise error

        monkeypatch.setattr(module, "check", broken)
        with pytest.raises(InvalidPayload, match=re.escape(message)):
            python_eval.validate({"expression": "1"})


@pytest.mark.parametrize(
    "payload",
    [
        {"expression": "1", "budget": 0},
        {"expression": "1", "budget": MAX_BUDGET + 1},
        {"expression": "1", "budget": True},
        {"expression": "1", "budget": "1000"},
        {"expression": "1", "max_result_bytes": MAX_RESULT_BYTES + 1},
        {"expression": "1", "max_result_bytes": 1.5},
    ],
)
def test_limits_in_the_payload_are_checked(payload: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayload, match="must be an integer from 1 to"):
        python_eval.validate(payload)


# -- run: nothing but Fatal, and a clear one -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("['a' * 10**6] * 10**6", "the expression would build 1000001000001 elements, over the limit of 10"),
        ("len(sorted([[0] * 10**6] * 10**6))", "the expression would build 1000001000001 elements"),
        ("len(sorted([[0] * 1000] * 1000))", "the expression would touch"),
        ("'x' * 10**9", "limit exceeded: repetition would be longer than 1000000"),
        ("[0] * 10**8", "limit exceeded: repetition would be longer than 1000000"),
        ("sum(range(10**12))", "limit exceeded: range would be longer than 1000000"),
        ("10**10**10", "limit exceeded: power larger than 100000 bits"),
        ("str(10**100000)", "limit exceeded: power larger than 100000 bits"),
        ("[[['a' * 1000] * 1000] * 1000]", "the expression would build 1001001001 elements"),
        ("(1 // x for x in [1, 0])", "ZeroDivisionError"),  # a lazy result fails while it is converted
    ],
)
def test_run_bombs_end_quickly_as_fatal(ctx: TaskContext, expression: str, message: str) -> None:
    assert fails(ctx, {"expression": expression}).startswith(f"python_eval: {message}")


def test_run_turns_recursion_and_memory_errors_into_fatal(
    ctx: TaskContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep: Any = 1
    for _ in range(5_000):
        deep = [deep]
    message = fails(ctx, {"expression": "x == [x]", "variables": {"x": deep}})
    assert message == "python_eval: expression nested too deeply (limit 100)"

    def hungry(*args: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr(module, "evaluate", hungry)
    assert fails(ctx, {"expression": "1"}) == "python_eval: out of memory"


def test_the_budget_can_be_raised_in_the_payload(ctx: TaskContext) -> None:
    payload: dict[str, Any] = {"expression": "sorted(range(10**6))[-1]"}
    assert "over the limit of 10000000" in fails(ctx, payload)
    payload["budget"] = 10**8
    python_eval.validate(payload)
    assert python_eval.run(ctx, payload) == 10**6 - 1


# -- results: measured while converted, capped before they are built ----------------------------------------
@pytest.mark.parametrize(
    "expression",
    [
        "['a' * 10**5] * 99",  # 10 MB of JSON from a value of 99 references
        "list(range(10**6))",
        "{str(i): 'v' * 1000 for i in range(2000)}",
        "('x' * 1000 for i in range(10**6))",  # a lazy result is measured as it is evaluated
        "set(range(10**6))",
    ],
)
def test_results_over_the_cap_are_refused_early(ctx: TaskContext, expression: str) -> None:
    message = fails(ctx, {"expression": expression})
    assert message.startswith("python_eval: the result is larger than 1048576 bytes as JSON")


def test_the_result_cap_can_be_raised_in_the_payload(ctx: TaskContext) -> None:
    payload: dict[str, Any] = {"expression": "['a' * 10**5] * 20", "max_result_bytes": 4 << 20}
    python_eval.validate(payload)
    assert python_eval.run(ctx, payload) == ["a" * 10**5] * 20


def test_results_that_json_cannot_carry_are_fatal(ctx: TaskContext) -> None:
    assert "too large to print" in fails(ctx, {"expression": "2 ** 20000"})
    assert "cannot be part of a JSON result" in fails(ctx, {"expression": "[len]"})
    assert "not valid UTF-8" in fails(ctx, {"expression": "'\\ud800'"})
    deep: Any = []
    for _ in range(300):
        deep = [deep]
    assert "nested deeper than 254 levels" in fails(ctx, {"expression": "x", "variables": {"x": deep}})


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(max_size=5), inner, max_size=5)
        | st.tuples(inner, inner)
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_the_result_is_measured_exactly(value: Any) -> None:
    size = len(orjson.dumps(to_json(value)))
    assert to_json(value, size) == to_json(value)
    with pytest.raises(Fatal, match="larger than"):
        to_json(value, size - 1)


def test_a_normal_expression_still_works(ctx: TaskContext) -> None:
    payload = {"expression": "{k: sorted(v) for k, v in d.items()}", "variables": {"d": {"a": [3, 1]}}}
    python_eval.validate(payload)
    assert python_eval.run(ctx, payload) == {"a": [1, 3]}
    assert python_eval.run(ctx, {"expression": "sorted({(i % 3, 'x') for i in range(9)})"}) == [
        [0, "x"],
        [1, "x"],
        [2, "x"],
    ]


def test_the_registry_sees_only_swarm_errors_however_little_stack_is_left() -> None:
    registry = Registry()
    registry.register(python_eval)
    sources = ["-" * 450 + "1", "(" * 450 + "1" + ")" * 450, "[[[[[[[[1]]]]]]]]", "sorted(x)[0]"]

    def at_depth(frames: int, source: str) -> None:
        if frames > 0:
            return at_depth(frames - 1, source)
        with contextlib.suppress(SwarmError):  # what the scheduler catches: anything else drops a batch
            registry.validate("python_eval", {"expression": source, "variables": {"x": [1]}})
        return None

    used = len(inspect.stack(0))
    for margin in (40, 80, 160, 320):
        for source in sources:
            at_depth(sys.getrecursionlimit() - used - margin, source)
