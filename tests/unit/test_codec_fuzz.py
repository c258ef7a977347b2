"""Fuzzing the codec: whatever bytes arrive, `decode` returns an envelope or raises `ProtocolError`.

A node decodes every message a peer, a client or an attacker publishes, so any other exception is a bug:
the message would escape the "log it, count it, go on" path. The inputs are random bytes, random JSON
values, and valid envelopes of every body type (built from the body classes' type hints, so a new body
type is fuzzed without touching this file) encoded with `encode` and then damaged: a field dropped or
added, a value of the wrong JSON type, numbers past 64 bits, deep nesting, hostile and very long strings,
bytes cut or flipped.

`peek_sender`, which reads a message `decode` refused, must never raise at all.

Bugs these fuzzers found have a test of their own each, with the input that showed them. The id
grammar is checked at decode time: ids that could smuggle a topic level, a wildcard or a path into a
topic or a file name are refused wherever an id is expected.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, reject, settings
from hypothesis import strategies as st

from swarm.codec import MAX_DEPTH, decode, encode, peek_sender
from swarm.devices.capabilities import Capabilities
from swarm.devices.profiles import simulated_capabilities
from swarm.errors import ProtocolError
from swarm.messages import BODY_TYPES, Envelope

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLUSTER = "c"

#: Strings an id must never be allowed to smuggle into a topic or a path.
HOSTILE = ("/", "#", "+", "..", "../..", "a/b", "x\x00y", "\x00", "", " ", "\n", "é", "\u202e", "$SYS")

# --- valid envelopes, built from the type hints --------------------------------------------------------

#: Integers every codec version accepts (the id-grammar codec refuses |n| > 2**53 - 1).
_INT = st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
_EPOCH = st.integers(min_value=0, max_value=2**53 - 1)
_FLOAT = st.floats(allow_nan=False, allow_infinity=False)
# No lone surrogates: orjson cannot encode them, so no valid message carries one.
_CHARS = st.characters(exclude_categories=("Cs",))
_TEXT = st.one_of(st.text(_CHARS, max_size=12), st.sampled_from(HOSTILE))
#: The id grammar: what every codec version accepts where an id is expected.
_ID = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.:=@-]{0,15}", fullmatch=True).filter(lambda s: ".." not in s)
#: Fields that hold ids, for a codec that does not mark them in the type hints.
_ID_FIELDS = frozenset({"task_id", "job_id", "coordinator", "standbys", "after", "target", "node", "ref"})
_JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | _INT | _FLOAT | st.text(_CHARS, max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(_CHARS, max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
_JSON_OBJECT = st.dictionaries(st.text(_CHARS, max_size=6), _JSON, max_size=3)

#: A valid device; generated capabilities vary its fields, so fields added later are covered too.
_BASE_CAPABILITIES = simulated_capabilities("a")


def _is_id_hint(hint: Any) -> bool:
    # By name, so that this file needs nothing from the module that defines the marker.
    return typing.get_origin(hint) is typing.Annotated and any(
        type(mark).__name__ == "IdMarker" for mark in typing.get_args(hint)[1:]
    )


def strategy_for(hint: Any, name: str = "") -> st.SearchStrategy[Any]:
    """Values of a field type as the codec understands them (the same hints it compiles)."""
    if _is_id_hint(hint) or (hint is str and name in _ID_FIELDS):
        return _ID
    if typing.get_origin(hint) is typing.Annotated:
        return strategy_for(typing.get_args(hint)[0], name)
    if hint is Any:
        return _JSON
    simple: dict[Any, st.SearchStrategy[Any]] = {int: _INT, float: _FLOAT, str: _TEXT, bool: st.booleans()}
    if hint in simple:
        return simple[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([st.none() if a is type(None) else strategy_for(a, name) for a in args])
    if origin is tuple:
        return st.lists(strategy_for(args[0], name), max_size=3).map(tuple)
    if origin is dict:
        return _JSON_OBJECT
    if origin is typing.Literal:
        return st.sampled_from(args)
    if dataclasses.is_dataclass(hint):
        return dataclass_strategy(hint)
    raise TypeError(f"no strategy for {hint!r}")


def dataclass_strategy(cls: Any) -> st.SearchStrategy[Any]:
    """Instances of a (body) dataclass with every field drawn from its type.

    A field with a default (or, for capabilities, a known good value) keeps it half the time, since a
    constructor may check values beyond their type (a known isolation level, at least one core); an
    instance the constructor refuses is not a valid message and is skipped.
    """
    hints = typing.get_type_hints(cls, include_extras=True)
    base = _BASE_CAPABILITIES if cls is Capabilities else None
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for f in dataclasses.fields(cls):
        drawn = strategy_for(hints[f.name], f.name)
        if base is not None:
            fields[f.name] = st.just(getattr(base, f.name)) | drawn
        elif f.default is not dataclasses.MISSING:
            fields[f.name] = st.just(f.default) | drawn
        elif f.default_factory is not dataclasses.MISSING:
            fields[f.name] = st.builds(f.default_factory) | drawn
        else:
            fields[f.name] = drawn

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        values = {name: draw(strategy) for name, strategy in fields.items()}
        try:
            return cls(**values)
        except (TypeError, ValueError):
            reject()

    return build()


BODIES = st.one_of([dataclass_strategy(cls) for cls in BODY_TYPES.values()])
ENVELOPES = st.builds(Envelope, st.just(1), st.just(CLUSTER), _ID, _EPOCH, _ID, BODIES)


def _only_protocol_errors(data: bytes) -> Envelope | None:
    """Decode as a node does; anything but success or `ProtocolError` fails the test, with the input."""
    try:
        return decode(data, cluster=CLUSTER)
    except ProtocolError:
        return None
    except Exception as exc:  # the point of the test: report any other escape with its input
        raise AssertionError(f"decode raised {type(exc).__name__}: {exc}\ninput: {data[:2000]!r}") from exc


def _peek_never_raises(data: bytes) -> None:
    who = peek_sender(data)
    assert who is None or (isinstance(who[0], str) and isinstance(who[1], str))


# --- mutations of a valid message ------------------------------------------------------------------

Path = tuple[str | int, ...]


def _paths(value: Any, here: Path = ()) -> list[Path]:
    """Every position inside a JSON value (the root included)."""
    out = [here]
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_paths(v, (*here, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(_paths(v, (*here, i)))
    return out


def _replace(value: Any, path: Path, new: Callable[[Any], Any]) -> Any:
    if not path:
        return new(value)
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    assert isinstance(value, list) and isinstance(head, int)
    return [*value[:head], _replace(value[head], rest, new), *value[head + 1 :]]


def _drop(value: Any, path: Path) -> Any:
    """Remove the item at `path` from its parent object or array."""
    parent, key = path[:-1], path[-1]

    def without(container: Any) -> Any:
        if isinstance(container, dict):
            return {k: v for k, v in container.items() if k != key}
        return [v for i, v in enumerate(container) if i != key]

    return _replace(value, parent, without)


_RAW = "\x00raw\x00"  # a placeholder string, swapped for raw JSON text after serialisation


def _deep(depth: int, kind: str) -> str:
    return ('{"k":' * depth + "1" + "}" * depth) if kind == "object" else ("[" * depth + "1" + "]" * depth)


#: Replacement values: every JSON type, numbers past what an int or a double holds, hostile strings.
_ODD_VALUES: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    2**63,
    2**64,
    -(2**63) - 1,
    10**30,
    -(10**30),
    1.5,
    -0.0,
    1e308,
    5e-324,
    "",
    "1",
    *HOSTILE,
    [],
    [None],
    [[]],
    {},
    {"": None},
    {"epoch": 1},
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid encoded envelope, parsed, damaged in one to three places, and written out again."""
    env = draw(ENVELOPES)
    tree: Any = orjson.loads(encode(env))
    raw_text: str | None = None
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(tree)))
        op = draw(
            st.sampled_from(
                ("drop", "odd", "json", "long", "deep", "add", "wrap") if path else ("odd", "wrap")
            )
        )
        if op == "drop":
            tree = _drop(tree, path)
        elif op == "odd":
            odd = draw(st.sampled_from(_ODD_VALUES))
            tree = _replace(tree, path, lambda _v, odd=odd: odd)
        elif op == "json":
            other = draw(_JSON)
            tree = _replace(tree, path, lambda _v, other=other: other)
        elif op == "long":
            text = draw(st.sampled_from(("a", "/", "#", "\x00", "é", "\\"))) * draw(
                st.sampled_from((300, 70_000))
            )
            tree = _replace(tree, path, lambda _v, text=text: text)
        elif op == "deep" and raw_text is None:
            raw_text = _deep(
                draw(st.sampled_from((64, 256, 300, 2000))), draw(st.sampled_from(("array", "object")))
            )
            tree = _replace(tree, path, lambda _v: _RAW)
        elif op == "add":
            key = draw(st.sampled_from(("x", "", "__class__", "v", "b", "epoch", "task_id", "\x00")))
            extra = draw(st.sampled_from(_ODD_VALUES))
            tree = _replace(
                tree, path, lambda v, key=key, extra=extra: {**v, key: extra} if isinstance(v, dict) else v
            )
        elif op == "wrap":
            tree = _replace(tree, path, lambda v: draw(st.sampled_from(([v], {"b": v}, [v, v]))))
    # The standard library writes integers of any size, which orjson refuses to write.
    text = json.dumps(tree, ensure_ascii=draw(st.booleans()))
    if raw_text is not None:
        text = text.replace(json.dumps(_RAW), raw_text)
    return text.encode("utf-8", "surrogatepass")


@st.composite
def byte_damaged(draw: st.DrawFn) -> bytes:
    """A valid encoded envelope with bytes cut, flipped, inserted or duplicated."""
    data = bytearray(encode(draw(ENVELOPES)))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(("cut", "flip", "insert", "truncate", "dup")))
        if op == "cut":
            del data[i : i + draw(st.integers(1, 8))]
        elif op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[i:i] = draw(
                st.sampled_from((b"\x00", b"\xff", b"\xc3", b"\\u0000", b'"', b",", b"[", b"}", b"1e999"))
            )
        elif op == "truncate":
            del data[i:]
        else:
            data[i:i] = data[i : i + draw(st.integers(1, 16))]
    return bytes(data)


# --- the properties ----------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=512))
@example(b"")
@example(b"\xff\xfe")
@example(b"\x00")
@example(b'"\\ud800"')
@example(b"1" + b"0" * 400)
@example(b"[" * 100_000)
def test_random_bytes_raise_only_protocol_errors(data: bytes) -> None:
    _only_protocol_errors(data)
    _peek_never_raises(data)


@FUZZ
@given(_JSON)
def test_random_json_values_raise_only_protocol_errors(value: Any) -> None:
    data = orjson.dumps(value)
    _only_protocol_errors(data)
    _peek_never_raises(data)


@FUZZ
@given(
    st.fixed_dictionaries(
        {"v": st.sampled_from((1, 1.0, True, "1", None, 2**64)), "t": st.sampled_from(sorted(BODY_TYPES))},
        optional={
            "c": st.sampled_from((CLUSTER, "", None, 1)),
            "s": _JSON,
            "e": _JSON,
            "id": _JSON,
            "b": _JSON,
        },
    )
)
def test_envelope_shaped_json_raises_only_protocol_errors(raw: dict[str, Any]) -> None:
    data = json.dumps(raw).encode()
    _only_protocol_errors(data)
    _peek_never_raises(data)


@FUZZ
@given(ENVELOPES)
def test_every_valid_envelope_round_trips(env: Envelope) -> None:
    assert decode(encode(env), cluster=CLUSTER) == env


@FUZZ
@given(mutated())
def test_mutated_envelopes_raise_only_protocol_errors(data: bytes) -> None:
    _only_protocol_errors(data)
    _peek_never_raises(data)


@FUZZ
@given(byte_damaged())
def test_byte_damaged_envelopes_raise_only_protocol_errors(data: bytes) -> None:
    _only_protocol_errors(data)
    _peek_never_raises(data)


def _deep_payload(depth: int) -> bytes:
    """A job whose one task's payload nests arrays `depth` deep."""
    raw = {"v": 1, "c": CLUSTER, "s": "n1", "e": 0, "id": "m1", "t": "submit_job"}
    raw["b"] = {"job_id": "j1", "tasks": [{"task_id": "t1", "type": "echo", "payload": {"x": _RAW}}]}
    return json.dumps(raw).replace(json.dumps(_RAW), "[" * depth + "]" * depth).encode()


@FUZZ
@given(st.one_of(mutated(), byte_damaged()))
def test_what_decode_accepts_can_be_encoded_again(data: bytes) -> None:
    """A node re-publishes what it takes in (a spec, its tasks' payloads): decoding must not accept a
    message that `encode` then cannot write."""
    env = _only_protocol_errors(data)
    if env is None:
        return
    assert decode(encode(env), cluster=CLUSTER) == env


# --- bugs the fuzzers found, fixed since -------------------------------------------------------------


def _claim_with(**fields: Any) -> bytes:
    raw: dict[str, Any] = {
        "v": 1,
        "c": CLUSTER,
        "s": "n1",
        "e": 0,
        "id": "m1",
        "t": "claim",
        "b": {"epoch": 1},
    }
    raw.update(fields)
    return json.dumps(raw).encode()


@pytest.mark.parametrize("value", [[], ["ok"], {}, {"ok": 1}])
def test_a_literal_field_given_an_array_or_object_is_a_protocol_error(value: Any) -> None:
    raw = {
        "v": 1,
        "c": CLUSTER,
        "s": "n1",
        "e": 0,
        "id": "m1",
        "t": "results",
        "b": {"results": [{"task_id": "t1", "job_id": "j1", "attempt": 1, "kind": value}]},
    }
    with pytest.raises(ProtocolError):
        decode(json.dumps(raw).encode(), cluster=CLUSTER)


@pytest.mark.parametrize("field", ["v", "t", "s", "e", "id"])
def test_a_deeply_nested_envelope_field_is_a_protocol_error(field: str) -> None:
    data = _claim_with(**{field: "@"}).replace(b'"@"', b"[" * 5000 + b"]" * 5000)
    with pytest.raises(ProtocolError):
        decode(data, cluster=CLUSTER)


def test_a_payload_nested_deeper_than_encode_can_write_is_refused_or_written_again() -> None:
    data = _deep_payload(300)
    try:
        env = decode(data, cluster=CLUSTER)
    except ProtocolError:
        return
    assert decode(encode(env), cluster=CLUSTER) == env


def test_only_free_form_values_are_measured_for_depth() -> None:
    """Payloads may nest up to MAX_DEPTH levels under the message's own few; deeper ones are refused
    with the field's path."""
    env = decode(_deep_payload(MAX_DEPTH - 1), cluster=CLUSTER)  # under the payload object
    assert decode(encode(env), cluster=CLUSTER) == env
    with pytest.raises(ProtocolError, match=r"tasks\[0\]\.payload: nested deeper than"):
        decode(_deep_payload(MAX_DEPTH), cluster=CLUSTER)


# --- the id grammar (ids are checked at decode time) -------------------------------------------------

BAD_IDS = ["a/b", "+", "#", "..", "a..b", "x\x00y", "", "/etc/passwd", "a" * 10_000, "j 1", "$SYS"]


def _submit(
    job_id: str = "j1", task_id: str = "t1", sender: str = "n1", after: tuple[str, ...] = ()
) -> bytes:
    raw = {
        "v": 1,
        "c": CLUSTER,
        "s": sender,
        "e": 0,
        "id": "m1",
        "t": "submit_job",
        "b": {
            "job_id": job_id,
            "tasks": [{"task_id": task_id, "type": "echo", "payload": {}, "after": after}],
        },
    }
    return json.dumps(raw).encode()


def test_good_ids_pass() -> None:
    env = decode(_submit("job-1.a_b:c@d=e", "t_1", "n-1ad6b476"), cluster=CLUSTER)
    assert env.sender == "n-1ad6b476"


@pytest.mark.parametrize("bad", BAD_IDS)
def test_a_bad_job_id_is_rejected(bad: str) -> None:
    with pytest.raises(ProtocolError):
        decode(_submit(job_id=bad), cluster=CLUSTER)


@pytest.mark.parametrize("bad", BAD_IDS)
def test_a_bad_task_id_is_rejected(bad: str) -> None:
    with pytest.raises(ProtocolError):
        decode(_submit(task_id=bad), cluster=CLUSTER)


@pytest.mark.parametrize("bad", BAD_IDS)
def test_a_bad_dependency_id_is_rejected(bad: str) -> None:
    with pytest.raises(ProtocolError):
        decode(_submit(after=(bad,)), cluster=CLUSTER)


@pytest.mark.parametrize("bad", BAD_IDS)
def test_a_bad_sender_is_rejected(bad: str) -> None:
    with pytest.raises(ProtocolError):
        decode(_submit(sender=bad), cluster=CLUSTER)


@pytest.mark.parametrize(
    ("tag", "body"),
    [
        ("cancel", {"target": "a/b"}),
        ("coordinator", {"epoch": 1, "coordinator": "#"}),
        ("coordinator", {"epoch": 1, "coordinator": "n1", "standbys": ["+"]}),
        ("cancel_attempt", {"task_id": "..", "attempt": 1}),
        ("job_state", {"job_id": "j/../x", "total": 1}),
        ("commit", {"job_id": "j1", "updates": [{"task_id": "t/1", "state": "done", "attempt": 1}]}),
        (
            "assign",
            {"tasks": [{"task_id": "t1", "job_id": "j#", "attempt": 1, "type": "echo", "payload": {}}]},
        ),
        ("results", {"results": [{"task_id": "t\x00", "job_id": "j1", "attempt": 1, "kind": "ok"}]}),
    ],
)
def test_ids_in_every_body_are_checked(tag: str, body: dict[str, Any]) -> None:
    raw = {"v": 1, "c": CLUSTER, "s": "n1", "e": 0, "id": "m1", "t": tag, "b": body}
    with pytest.raises(ProtocolError):
        decode(json.dumps(raw).encode(), cluster=CLUSTER)


def test_peek_sender_never_names_a_bad_id() -> None:
    assert peek_sender(_submit(sender="a/b")) is None
