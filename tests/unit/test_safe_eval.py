"""The restricted evaluator: what it computes, what it refuses, and the bombs it defuses."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.errors import InvalidPayload
from swarm.plugins.safe_eval import EvalError, Limits, check, evaluate


@pytest.mark.parametrize(
    ("expression", "variables", "expected"),
    [
        ("1 + 2 * 3 - 4 / 2", {}, 5.0),
        ("2 ** 10 // 3 % 7 - -1", {}, 6),
        ("(7 << 2) | 1 ^ 3 & ~0 >> 1", {}, (7 << 2) | 1 ^ 3 & ~0 >> 1),
        ("1 < x <= 3 and not x == 2 or x is None", {"x": 3}, True),
        ("'yes' if flag else 'no'", {"flag": 0}, "no"),
        ("a or b", {"a": 0, "b": "fallback"}, "fallback"),
        ("xs[1:] + xs[:1]", {"xs": [1, 2, 3]}, [2, 3, 1]),
        ("d['a']['b'][-1]", {"d": {"a": {"b": [1, 2]}}}, 2),
        ("sorted(words, key=len, reverse=True)", {"words": ["a", "ccc", "bb"]}, ["ccc", "bb", "a"]),
        ("[x * y for x in range(3) for y in range(3) if x < y]", {}, [0, 0, 2]),
        ("{k: v * 2 for k, v in d.items() if v}", {"d": {"a": 1, "b": 0}}, {"a": 2}),
        ("{c for c in 'abca'}", {}, {"a", "b", "c"}),
        ("sum(n for n in range(101))", {}, 5050),
        ("[(i, c) for i, (c, n) in enumerate(zip('ab', [1, 2]))]", {}, [(0, "a"), (1, "b")]),
        ("' '.join(s.split()[::-1]).upper()", {"s": "hello big world"}, "WORLD BIG HELLO"),
        ("s.replace('a', 'o').title().center(9, '*')", {"s": "banana"}, "Bonono".center(9, "*")),
        ("f'{name!r}: {value:>6.2f}'", {"name": "pi", "value": 3.14159}, "'pi':   3.14"),
        ("[*xs, *range(2)]", {"xs": [9]}, [9, 0, 1]),
        ("{**d, 'b': 2}", {"d": {"a": 1}}, {"a": 1, "b": 2}),
        ("d.get('missing', len(d))", {"d": {"a": 1}}, 1),
        ("max(xs) - min(xs) + abs(-1) + round(2.567, 1)", {"xs": [3, 9]}, 6 + 1 + 2.6),
        ("int('42') + float('0.5') + bool([]) + len(str(10))", {}, 44.5),
        ("any(x > 2 for x in xs) and all(x > 0 for x in xs)", {"xs": [1, 3]}, True),
        ("list(reversed(tuple(set([1, 1, 2]))))", {}, [2, 1]),
        ("{1, 2} | {3} - {2}", {}, {1, 2, 3}),
        ("(2 ** 200).bit_length() + (1.0).is_integer()", {}, 202),
    ],
)
def test_evaluates_the_allowed_grammar(expression: str, variables: dict[str, Any], expected: Any) -> None:
    assert evaluate(expression, variables) == expected


ESCAPES = [
    "().__class__.__bases__",
    "().__class__.__bases__[0].__subclasses__()",
    "[].__class__",
    "''.__class__.__mro__",
    "__import__('os')",
    "__builtins__",
    "getattr(1, 'real')",
    "type(1)",
    "open('/etc/passwd')",
    "eval('1')",
    "exec('1')",
    "globals()",
    "vars()",
    "lambda: 1",
    "(x := 1)",
    "'{0.__class__}'.format(1)",
    "'{x}'.format_map({})",
    "[].append(1)",
    "s.upper",
    "x.__len__()",
    "[len][0]('x')",
    "xs[0]('x')",
    "b'bytes'",
    "1j",
    "...",
    "f'{s:{w}}'",
    "f'{s:>99999}'",
    "[_ for _ in range(3)]",
    "len(_secret)",
    "sorted(xs, _key=len)",
    "len(**kw)",
    "await x",
    "yield x",
    "import os",
    "x = 1",
]


@pytest.mark.parametrize("expression", ESCAPES)
def test_escape_attempts_are_rejected_before_running(expression: str) -> None:
    with pytest.raises(InvalidPayload):
        check(expression, ["x", "s", "w", "xs", "kw"])


def test_names_must_be_variables_builtins_or_comprehension_targets() -> None:
    check("[y for y in xs] + [len(x)]", ["xs", "x"])
    with pytest.raises(InvalidPayload, match="name 'nope' is not defined"):
        check("nope + 1", ["x"])
    with pytest.raises(InvalidPayload, match="'nope' is not a callable built-in"):
        check("nope(1)", ["nope"])


def test_attributes_of_other_types_are_refused_at_run_time() -> None:
    with pytest.raises(EvalError, match="no allowed method 'upper'"):
        evaluate("x.upper()", {"x": [1]})
    with pytest.raises(EvalError, match="no allowed method"):
        evaluate("d.keys().isdisjoint([])", {"d": {}})


def test_bad_input_is_invalid_payload() -> None:
    for bad in ("1 +", "", "(" * 300 + ")" * 300):
        with pytest.raises(InvalidPayload):
            check(bad)
    with pytest.raises(InvalidPayload, match="longer than"):
        check("1+" * 6000 + "1")
    with pytest.raises(InvalidPayload, match="not allowed"):
        evaluate("x", {"_x": 1, "x": 2})


BOMBS = [
    "2 ** 10 ** 8",
    "10 ** 100000",
    "1 << 10 ** 8",
    "'x' * 10 ** 9",
    "[0] * 10 ** 9",
    "(1,) * 10 ** 9",
    "range(10 ** 9)",
    "list(range(10 ** 6)) * 2",
    "'x' * 10 ** 6 + 'y' * 10 ** 6",
    "sum(1 for a in range(10 ** 6) for b in range(10 ** 6))",
    "[1 for a in range(10 ** 6) for b in range(10 ** 6)]",
    "[[0] * 10 ** 6 for i in range(100)]",
    "','.join(['x' * 999999] * 1000)",
    "('x' * 10 ** 6).replace('x', 'yy')",
    "'ab'.replace('', 'x' * 10 ** 6)",
    "str([s] * 1000)",
    "f'{[s] * 1000!r}'",
    "'a'.center(10 ** 9)",
    "'a'.zfill(10 ** 9)",
    "round(1, -10 ** 6)",
    "int('9' * 100000)",
    "'%s' % 1",
    "2 ** 99999 * 2 ** 99999",
]


@pytest.mark.parametrize("expression", BOMBS)
def test_memory_and_cpu_bombs_stop_quickly(expression: str) -> None:
    started = time.perf_counter()
    with pytest.raises(EvalError):
        evaluate(expression, {"s": "x" * 10_000})
    assert time.perf_counter() - started < 3.0


def test_runtime_errors_become_eval_errors() -> None:
    with pytest.raises(EvalError, match="ZeroDivisionError"):
        evaluate("1 / 0")
    with pytest.raises(EvalError, match="KeyError"):
        evaluate("d['x']", {"d": {}})
    with pytest.raises(EvalError, match="cannot unpack"):
        evaluate("[a for a, b in [(1, 2, 3)]]")
    with pytest.raises(EvalError, match="only adds numbers"):
        evaluate("sum([[1], [2]], [])")


def test_limits_are_configurable() -> None:
    with pytest.raises(EvalError, match="more than 50 evaluation steps"):
        evaluate("sum(x for x in range(100))", {}, Limits(max_steps=50))
    with pytest.raises(EvalError, match="longer than 10"):
        evaluate("'x' * 11", {}, Limits(max_len=10))
    with pytest.raises(EvalError, match="larger than 64 bits"):
        evaluate("2 ** 65", {}, Limits(max_int_bits=64))


# -- properties ----------------------------------------------------------------------------------------------

_ARITH = ("+", "-", "*", "//", "%")


@st.composite
def int_expressions(draw: st.DrawFn, depth: int = 0) -> str:
    if depth >= 4 or draw(st.booleans()):
        return str(draw(st.integers(-(10**6), 10**6)))
    op = draw(st.sampled_from(_ARITH))
    left = draw(int_expressions(depth + 1))
    right = draw(int_expressions(depth + 1))
    return f"({left} {op} {right})"


@settings(max_examples=300, deadline=None)
@given(int_expressions())
def test_integer_arithmetic_matches_python(expression: str) -> None:
    try:
        expected: Any = eval(expression)  # the reference: the expression is built from int literals only
    except ZeroDivisionError:
        with pytest.raises(EvalError, match="ZeroDivisionError"):
            evaluate(expression)
        return
    assert evaluate(expression) == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-1000, 1000), max_size=30), st.integers(-1000, 1000))
def test_comprehensions_match_python(xs: list[int], k: int) -> None:
    expression = "sorted({x % 7: x * k for x in xs if x > k}.items())"
    assert evaluate(expression, {"xs": xs, "k": k}) == sorted({x % 7: x * k for x in xs if x > k}.items())


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=50))
def test_arbitrary_source_never_escapes_the_two_error_types(source: str) -> None:
    with contextlib.suppress(InvalidPayload, EvalError):
        evaluate(source, {"x": 1})
