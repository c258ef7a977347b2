"""Bytes <-> `Envelope`, validated in one place.

Ids (fields typed `swarm.ids.Id`, the envelope's sender and message id) are checked against the one id
grammar here, so no id from the wire reaches a topic or a path unchecked; integers must be exact in a
double (|n| < 2**53), which also keeps an epoch from being pushed where its successor cannot be encoded.

Encoding leans on orjson, which serialises slotted dataclasses natively. Decoding walks each body class's
type hints once, at import, and compiles a converter per field, so validating a message costs a few
function calls per field rather than a reflective walk per message. Every failure is a `ProtocolError`
whose text names the field path, e.g. ``tasks[3].priority: expected int, got str``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any

import orjson

from swarm import PROTOCOL_VERSION
from swarm.errors import ProtocolError
from swarm.ids import IdMarker, is_id
from swarm.messages import BODY_TYPES, Envelope

__all__ = ["DEFAULT_MAX_BYTES", "MAX_DEPTH", "MAX_INT", "decode", "encode", "peek_sender"]

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
#: Integers beyond this are refused: they would not survive a JSON reader that uses doubles.
MAX_INT = 2**53 - 1
#: Free-form values (payloads, results) nesting deeper than this are refused: what is decoded must encode
#: again (a coordinator forwards payloads), and orjson writes at most 255 levels. Every other part of a
#: message has the fixed shape of its class, a few levels deep, and a value of the wrong shape is refused
#: without being walked, so only free-form values are measured (walking whole messages, a 10,000-task
#: spec among them, was a tenth of what a node spent decoding).
MAX_DEPTH = 200

Converter = Callable[[Any], Any]


def encode(env: Envelope) -> bytes:
    """Serialise an envelope; the body's class tag becomes the envelope's type."""
    return orjson.dumps(
        {
            "v": env.v,
            "c": env.cluster,
            "s": env.sender,
            "e": env.epoch,
            "id": env.msg_id,
            "t": type(env.body).TAG,
            "b": env.body,
        }
    )


def decode(data: bytes, *, cluster: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> Envelope:
    """Parse and validate `data`; raise `ProtocolError` saying exactly what is wrong."""
    if len(data) > max_bytes:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ProtocolError(f"envelope: expected object, got {type(raw).__name__}")
    version = raw.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"unsupported protocol version {_shown(version)} (this node speaks {PROTOCOL_VERSION})"
        )
    tag = raw.get("t")
    body_type = BODY_TYPES.get(tag) if isinstance(tag, str) else None
    if body_type is None:
        raise ProtocolError(f"unknown message type {_shown(tag)}")
    sender = _top_id(raw.get("s"), "s")
    msg_cluster = _top(raw.get("c"), str, "string", "c")
    if cluster is not None and msg_cluster != cluster:
        raise ProtocolError(f"message for cluster {msg_cluster!r} reached cluster {cluster!r}")
    try:
        body = _converter_of(body_type)(raw.get("b"))
    except _Invalid as exc:
        raise ProtocolError(f"{tag}{exc.path}: {exc.message}") from None
    return Envelope(
        v=PROTOCOL_VERSION,
        cluster=msg_cluster,
        sender=sender,
        epoch=_top_epoch(raw.get("e")),
        msg_id=_top_id(raw.get("id"), "id"),
        body=body,
    )


def _depth(value: Any) -> int:
    """How deeply `value` nests, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def peek_sender(data: bytes) -> tuple[str, str] | None:
    """Best effort `(sender, msg_id)` of a message that failed to decode, to tell its sender why.

    Only a sender that is a valid id is returned: the caller publishes to that sender's inbox.
    """
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if isinstance(raw, dict) and isinstance(raw.get("s"), str) and is_id(raw["s"]):
        msg_id = raw.get("id")
        return raw["s"], msg_id if isinstance(msg_id, str) and is_id(msg_id) else ""
    return None


# --- compiled converters -----------------------------------------------------------------------------
#
# A converter takes a JSON value and returns the typed value or raises `_Invalid` with the path *below*
# it; each parent prepends its own segment while the error travels up. The success path therefore builds
# no strings at all, which matters: a busy node decodes every commit of the cluster.


class _Invalid(Exception):
    """A field failed validation; `path` says where below the converter that raised it."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def _expected(expected: str, value: Any) -> _Invalid:
    return _Invalid("", f"expected {expected}, got {type(value).__name__}")


def _top(value: Any, kind: type, expected: str, name: str) -> Any:
    if type(value) is not kind:
        raise ProtocolError(f"{name}: expected {expected}, got {type(value).__name__}")
    return value


def _top_id(value: Any, name: str) -> str:
    if type(value) is not str or not is_id(value):
        raise ProtocolError(f"{name}: expected an id, got {_shown(value)}")
    return value


def _top_epoch(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= MAX_INT:
        raise ProtocolError(f"e: expected an epoch in 0..2**53-1, got {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    """A short picture of a bad value for an error text; containers by type, since repr() of one nested
    thousands deep would itself fail."""
    if isinstance(value, list | dict):
        return f"{type(value).__name__} of {len(value)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _int(value: Any) -> int:
    if type(value) is not int:
        raise _expected("int", value)
    if not -MAX_INT <= value <= MAX_INT:
        raise _Invalid("", f"integer {_shown(value)} out of range")
    return value


def _id(value: Any) -> str:
    if type(value) is not str:
        raise _expected("id", value)
    if not is_id(value):
        raise _Invalid("", f"not a valid id: {_shown(value)}")
    return value


def _float(value: Any) -> float:
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    raise _expected("number", value)


def _str(value: Any) -> str:
    if type(value) is not str:
        raise _expected("string", value)
    return value


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise _expected("bool", value)
    return value


def _free(value: Any) -> Any:
    """Any JSON value, nested at most `MAX_DEPTH` levels."""
    if type(value) in (dict, list) and _depth(value) > MAX_DEPTH:
        raise _Invalid("", f"nested deeper than {MAX_DEPTH} levels")
    return value


def _json_object(value: Any) -> dict[str, Any]:
    if type(value) is not dict:
        raise _expected("object", value)
    return _free(value)  # type: ignore[no-any-return]


_SCALARS: dict[Any, Converter] = {int: _int, float: _float, str: _str, bool: _bool}


def _converter_for(hint: Any) -> Converter:
    """The converter for a type hint."""
    if hint is Any:
        return _free
    if typing.get_origin(hint) is typing.Annotated:
        base, *marks = typing.get_args(hint)
        if base is str and any(isinstance(m, IdMarker) for m in marks):
            return _id
        return _converter_for(base)
    if hint in _SCALARS:
        return _SCALARS[hint]
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) != 1:
            raise TypeError(f"unsupported union {hint!r}")
        inner = _converter_for(members[0])
        return lambda v: None if v is None else inner(v)
    if origin is tuple:
        return _tuple_converter(_converter_for(args[0]))
    if origin is dict:
        return _json_object
    if origin is typing.Literal:
        allowed = frozenset(args)

        def convert_literal(v: Any) -> Any:
            if type(v) not in (str, int, bool) or v not in allowed:
                raise _Invalid("", f"expected one of {sorted(allowed)}, got {_shown(v)}")
            return v

        return convert_literal
    if dataclasses.is_dataclass(hint):
        return _dataclass_converter(hint)
    raise TypeError(f"unsupported field type {hint!r}")


def _tuple_converter(item: Converter) -> Converter:
    def convert_tuple(v: Any) -> tuple[Any, ...]:
        if type(v) is not list:
            raise _expected("array", v)
        out = []
        for i, x in enumerate(v):
            try:
                out.append(item(x))
            except _Invalid as exc:
                raise _Invalid(f"[{i}]{exc.path}", exc.message) from None
        return tuple(out)

    return convert_tuple


#: Distinct values a value class's converter remembers before it starts over.
_MEMO_SIZE = 64


def _closed(hint: Any) -> bool:
    """Whether every value of `hint` is made of scalars, tuples and closed dataclasses: no free-form
    JSON anywhere inside it."""
    if hint is Any or typing.get_origin(hint) is dict:
        return False
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint, include_extras=True)
        return all(_closed(hints[f.name]) for f in dataclasses.fields(hint))
    return all(
        _closed(arg) for arg in typing.get_args(hint) if arg is not Ellipsis and not isinstance(arg, str)
    )


def _dataclass_converter(cls: Any) -> Converter:
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = [(f.name, _converter_for(hints[f.name]), _has_default(f)) for f in dataclasses.fields(cls)]
    known = frozenset(name for name, _, _ in fields)
    if cls.__dataclass_params__.frozen and _closed(cls):
        return _memoized(_build(cls, fields, known))
    return _build(cls, fields, known)


def _memoized(convert: Converter) -> Converter:
    """`convert` for an immutable value class, remembering what it made of the JSON text of a value.

    The tasks of a batch nearly always share their requirements and retry policy: building them once
    instead of once per task took the decoding of a 10,000-task spec from 230 to 141 ms. The key is the
    value's JSON text, not the value, so `1`, `1.0` and `true` stay different and a value refused once
    is refused every time; equal text gives an equal, immutable object, so sharing it is safe.
    """
    memo: dict[bytes, Any] = {}

    def convert_value(value: Any) -> Any:
        if type(value) is not dict:
            return convert(value)
        try:
            key = orjson.dumps(value)
        except TypeError:  # nested past what orjson writes: the converter says which field is wrong
            return convert(value)
        made = memo.get(key)
        if made is None:
            made = convert(value)
            if len(memo) >= _MEMO_SIZE:
                memo.clear()
            memo[key] = made
        return made

    return convert_value


def _build(cls: Any, fields: list[tuple[str, Converter, bool]], known: frozenset[str]) -> Converter:
    def convert(value: Any) -> Any:
        if type(value) is not dict:
            raise _expected("object", value)
        if not known.issuperset(value):
            raise _Invalid("", f"unknown field(s) {sorted(set(value) - known)}")
        kwargs = {}
        for name, conv, optional in fields:
            if name in value:
                try:
                    kwargs[name] = conv(value[name])
                except _Invalid as exc:
                    raise _Invalid(f".{name}{exc.path}", exc.message) from None
            elif not optional:
                raise _Invalid("", f"missing field {name!r}")
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise _Invalid("", str(exc)) from None

    return convert


def _has_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _converter_of(body_type: type[Any]) -> Converter:
    """The converter of a message type, made the first time one arrives: making all of them when this
    module loads cost every CLI command 10 ms, for the few types one command reads."""
    convert = _CONVERTERS.get(body_type)
    if convert is None:
        convert = _CONVERTERS[body_type] = _dataclass_converter(body_type)
    return convert


_CONVERTERS: dict[type[Any], Converter] = {}
