"""The evaluator's size budget and nesting limit: bombs end at once with a clear error, work still works."""

from __future__ import annotations

import gc
import re
import time
from typing import Any

import pytest

from swarm.errors import InvalidPayload
from swarm.plugins.safe_eval import (
    _MEMO_FLOOR,
    EvalError,
    Limits,
    _Measure,
    _tree_flat,
    _tree_leaf,
    _tree_own,
    check,
    evaluate,
)

QUICK = 1.0  # seconds; every refusal below takes milliseconds, this leaves room for a loaded machine
BUDGET = Limits().max_total  # 10^7


DEFAULTS = Limits()
OVER_BUDGET = r"the expression would (build|touch) \d+ elements, over the limit of 10000000"


def refused(expression: str, variables: dict[str, Any] | None = None, limits: Limits = DEFAULTS) -> str:
    """Evaluate `expression`, expecting a quick `EvalError`; return its message."""
    started = time.perf_counter()
    with pytest.raises(EvalError) as caught:
        evaluate(expression, variables, limits)
    assert time.perf_counter() - started < QUICK, expression
    return str(caught.value)


# -- building: no value may be larger than the budget, counting every reference ----------------------------
@pytest.mark.parametrize(
    ("expression", "size"),
    [
        ("['a' * 10**6] * 10**6", 10**6 * (10**6 + 1) + 1),  # 4 ms of work, 10^12 bytes to serialise
        ("len(sorted([[0] * 10**6] * 10**6))", 10**6 * (10**6 + 1) + 1),  # minutes of sorting
        ("[[['a' * 1000] * 1000] * 1000]", 1 + 1000 * (1 + 1000 * 1001)),  # refused before the outer list
        ("(('ab' * 500,) * 1000,) * 1000", 1 + 1000 * (1 + 1000 * 1001)),
        ("[[0] * 1000] * 9991", 1 + 9991 * 1001),
        ("[big] * 50 + [big] * 50", 1 + 100 * 100_001),  # each half fits, the whole does not
    ],
)
def test_values_larger_than_the_budget_are_refused_before_they_are_built(expression: str, size: int) -> None:
    message = refused(expression, {"big": list(range(100_000))})
    assert message == f"the expression would build {size} elements, over the limit of {BUDGET}"


def test_a_value_just_under_the_budget_is_built() -> None:
    assert len(evaluate("[[0] * 1000] * 9990")) == 9990  # 1 + 9990 * 1001 = 9_999_991 elements
    assert len(evaluate("['a' * 10**5] * 99")) == 99


@pytest.mark.parametrize(
    "expression",
    [
        "[x for i in range(1000)]",  # a comprehension of references
        "[x, x, x, x, x, x, x, x, x, x, x, x]",
        "list(zip(rows, rows))",
        "[[x] for i in range(1000)]",
    ],
)
def test_every_way_of_repeating_references_counts_them(expression: str) -> None:
    x = list(range(10**6))
    message = refused(expression, {"x": x, "rows": [x] * 6})
    assert re.fullmatch(OVER_BUDGET, message)


# -- touching: built-ins and operators charge what they read ------------------------------------------------
@pytest.mark.parametrize(
    "expression",
    [
        "len(sorted([[0] * 1000] * 1000))",  # 10^6 elements, each read about log2(1000) times
        "sorted(range(10**6))",
        "[xs == ys for i in range(200)]",  # 10^5 per comparison
        "[i in xs for i in range(200)]",  # a list is scanned
        "[max(xs) for i in range(200)]",
        "[sum(xs) for i in range(200)]",
        "[len(set(xs)) for i in range(200)]",
        "[len(str(xs)) for i in range(100)]",
        "[len(xs[:]) for i in range(200)]",
        "[len(words.upper()) for i in range(200)]",
        "[len(','.join(parts)) for i in range(200)]",
        "max(y for y in [xs] * 99 for z in [1, 2])",  # a lazy input is charged item by item
        "sum(1 for i in range(200) if xs == ys)",
        "[n * n for i in range(10**4)]",  # big-integer products
        "[n // m for i in range(10**4)]",
        "[xs.count(3) for i in range(200)]",
        "[len(s.union(xs)) for i in range(200)]",
        "[xs.index(99999) for i in range(200)]",
    ],
)
def test_work_is_charged_by_size_and_stops_at_the_budget(expression: str) -> None:
    variables = {
        "xs": list(range(10**5)),
        "ys": list(range(10**5)),
        "words": "w" * 10**5,
        "parts": ["p"] * 10**5,
        "n": 2**49_000,
        "m": 3**15_000,
        "s": {1, 2},
    }
    # A budget of 10^6 rather than 10^7: the refusal comes after as much work as the budget allows.
    message = refused(expression, variables, Limits(max_total=10**6))
    assert re.fullmatch(r"the expression would (build|touch) \d+ elements, over the limit of 10{6}", message)


def test_the_budget_is_configurable() -> None:
    assert evaluate("sorted(range(10**6))[-1]", {}, Limits(max_total=10**8)) == 10**6 - 1
    assert refused("sum(range(1000))", {}, Limits(max_total=100)).endswith("over the limit of 100")
    assert refused("[[0] * 10] * 10", {}, Limits(max_total=100)) == (
        "the expression would build 111 elements, over the limit of 100"
    )


# -- other bombs --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("'x' * 10**9", "repetition would be longer than 1000000"),
        ("[0] * 10**8", "repetition would be longer than 1000000"),
        ("sum(range(10**12))", "range would be longer than 1000000"),
        ("10**10**10", "power larger than 100000 bits"),
        ("2 ** (2 ** 100)", "power larger than 100000 bits"),
        ("str(10**100000)", "power larger than 100000 bits"),
        ("2**99999 * 2**99999", "product larger than 100000 bits"),
        ("1 << 10**8", "shift larger than 100000 bits"),
        ("str([list(range(1000))] * 999)", "str() would be longer than 1000000"),
        ("f'{[list(range(1000))] * 999}'", "formatted value would be longer than 1000000"),
        ("('x' * 10**6) + 'y'", "concatenation would be longer than 1000000"),
    ],
)
def test_other_bombs_end_quickly_with_a_clear_error(expression: str, message: str) -> None:
    assert refused(expression) == f"limit exceeded: {message}"


def test_error_messages_stay_short_whatever_the_values() -> None:
    assert refused("{}[(1,) * 10**5]") == "KeyError: (1, 1, 1, 1, 1, 1, ...)"
    assert refused("[0].index([1] * 10**5)") == "ValueError: value is not in list"


def test_ordinary_work_still_fits_the_default_budget() -> None:
    assert evaluate("sum(range(10**6))") == sum(range(10**6))
    assert evaluate("len(set(range(10**6)))") == 10**6
    assert evaluate("list(zip(range(10**6), range(10**6)))[-1]") == (10**6 - 1, 10**6 - 1)
    assert evaluate("len(','.join(str(i) for i in range(10**4)))") == len(",".join(map(str, range(10**4))))
    assert evaluate("sorted(d.items())[:2]", {"d": {str(i): i for i in range(10**4)}}) == [("0", 0), ("1", 1)]
    assert evaluate("[[0] * 1000] * 1000 == [[0] * 1000] * 1000")
    assert evaluate("len(sorted(xs, key=len))", {"xs": [[0] * 100] * 1000}) == 1000


# -- nesting ------------------------------------------------------------------------------------------------
DEEP = [
    "(" * 450 + "1" + ")" * 450,
    "-" * 450 + "1",
    "[" * 450 + "]" * 450,
    "not " * 450 + "1",
    "~" * 4000 + "1",
    "1 + " * 2000 + "1",
    "1 ** " * 1900 + "1",
    "x" + "[0]" * 3000,
    "a if b else " * 800 + "c",
    "{1: " * 190 + "1" + "}" * 190,
    "f(" * 150 + ")" * 150,
    "[1 " + "for a in x " * 150 + "]",
    "-" * 99 + "1",  # with the whole-expression node and the constant, 101 levels
]


@pytest.mark.parametrize("source", DEEP, ids=lambda s: f"{s[:12]}...{len(s)}")
def test_deep_sources_are_a_clear_invalid_payload(source: str) -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidPayload, match=re.escape("expression nested too deeply (limit 100)")):
        check(source, ["x", "a", "b", "c", "f"])
    assert time.perf_counter() - started < QUICK


def test_the_nesting_limit_is_exact_and_configurable() -> None:
    check("-" * 98 + "1")
    with pytest.raises(InvalidPayload, match=re.escape("(limit 10)")):
        check("-" * 9 + "1", [], Limits(max_depth=10))
    check("[1 for a in x for b in x]", ["x"], Limits(max_depth=6))
    with pytest.raises(InvalidPayload, match=re.escape("(limit 6)")):  # each `for` nests a generator
        check("[1 for a in x for b in x for c in x]", ["x"], Limits(max_depth=6))


def test_the_source_length_is_bounded() -> None:
    check(repr("a" * 9_998))
    with pytest.raises(InvalidPayload, match="longer than 10000 characters"):
        check(repr("a" * 9_999))


def test_deep_data_fails_cleanly_at_run_time() -> None:
    deep: Any = 1
    for _ in range(5_000):
        deep = [deep]
    assert refused("x == y", {"x": deep, "y": [deep]}) == "expression nested too deeply (limit 100)"
    assert refused("str(x)", {"x": deep}) == "expression nested too deeply (limit 100)"
    assert evaluate("len([x, x])", {"x": deep}) == 2  # sizes are measured without recursion


def test_memory_errors_become_a_clear_error() -> None:
    class Hungry:
        def __eq__(self, other: object) -> bool:
            raise MemoryError

        __hash__ = object.__hash__

    assert refused("x == 1", {"x": Hungry()}) == "out of memory"


def test_lazy_results_fail_with_eval_error_when_consumed() -> None:
    lazy = evaluate("(1 // x for x in [1, 0])")
    with pytest.raises(EvalError, match="ZeroDivisionError"):
        list(lazy)


# -- the size memo ------------------------------------------------------------------------------------------
def test_sizes_count_every_reference_and_the_memo_forgets_dead_values() -> None:
    measure = _Measure(_tree_leaf, _tree_flat, _tree_own)
    row = list(range(100))
    assert measure.of(row, 10**9) == 101
    assert measure.of([row, row, "abc", 2**200], 10**9) == 1 + 2 * 101 + 4 + 4
    assert measure.of([[row] * 10] * 10, 10**9) == 1 + 10 * (1 + 10 * 101)
    assert measure.of([[row] * 10] * 10, 500) > 500  # stops early
    for _ in range(10_000):
        measure.remember([0] * 200, 201)  # transient values: without pruning, 2.16 million references
    gc.collect()
    assert measure.held <= _MEMO_FLOOR + 1_000
    assert id(row) in measure.memo  # what is still alive stays remembered
