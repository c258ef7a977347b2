"""Bytes <-> `Envelope`, validated in one place.

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
from swarm.messages import BODY_TYPES, Body, Envelope

__all__ = ["DEFAULT_MAX_BYTES", "decode", "encode", "peek_sender"]

DEFAULT_MAX_BYTES = 16 * 1024 * 1024

Converter = Callable[[Any, str], Any]


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
        raise ProtocolError(f"unsupported protocol version {version!r} (this node speaks {PROTOCOL_VERSION})")
    tag = raw.get("t")
    body_type = BODY_TYPES.get(tag) if isinstance(tag, str) else None
    if body_type is None:
        raise ProtocolError(f"unknown message type {tag!r}")
    sender = _str(raw.get("s"), "s")
    msg_cluster = _str(raw.get("c"), "c")
    if cluster is not None and msg_cluster != cluster:
        raise ProtocolError(f"message for cluster {msg_cluster!r} reached cluster {cluster!r}")
    return Envelope(
        v=PROTOCOL_VERSION,
        cluster=msg_cluster,
        sender=sender,
        epoch=_int(raw.get("e"), "e"),
        msg_id=_str(raw.get("id"), "id"),
        body=_CONVERTERS[body_type](raw.get("b"), str(tag)),
    )


def peek_sender(data: bytes) -> tuple[str, str] | None:
    """Best effort `(sender, msg_id)` of a message that failed to decode, to tell its sender why."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if isinstance(raw, dict) and isinstance(raw.get("s"), str):
        msg_id = raw.get("id")
        return raw["s"], msg_id if isinstance(msg_id, str) else ""
    return None


# --- compiled converters -----------------------------------------------------------------------------


def _fail(path: str, expected: str, value: Any) -> typing.NoReturn:
    raise ProtocolError(f"{path}: expected {expected}, got {type(value).__name__}")


def _int(value: Any, path: str) -> int:
    if type(value) is not int:
        _fail(path, "int", value)
    return value


def _float(value: Any, path: str) -> float:
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    _fail(path, "number", value)


def _str(value: Any, path: str) -> str:
    if type(value) is not str:
        _fail(path, "string", value)
    return value


def _bool(value: Any, path: str) -> bool:
    if type(value) is not bool:
        _fail(path, "bool", value)
    return value


def _any(value: Any, path: str) -> Any:
    return value


def _json_object(value: Any, path: str) -> dict[str, Any]:
    if type(value) is not dict:
        _fail(path, "object", value)
    return value


_SCALARS: dict[Any, Converter] = {int: _int, float: _float, str: _str, bool: _bool, Any: _any}


def _converter_for(hint: Any) -> Converter:
    if hint in _SCALARS:
        return _SCALARS[hint]
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) != 1:
            raise TypeError(f"unsupported union {hint!r}")
        inner = _converter_for(members[0])
        return lambda v, p: None if v is None else inner(v, p)
    if origin is tuple:
        item = _converter_for(args[0])

        def convert_tuple(v: Any, p: str) -> tuple[Any, ...]:
            if type(v) is not list:
                _fail(p, "array", v)
            return tuple(item(x, f"{p}[{i}]") for i, x in enumerate(v))

        return convert_tuple
    if origin is dict:
        return _json_object
    if origin is typing.Literal:
        allowed = frozenset(args)

        def convert_literal(v: Any, p: str) -> Any:
            if v not in allowed:
                raise ProtocolError(f"{p}: expected one of {sorted(allowed)}, got {v!r}")
            return v

        return convert_literal
    if dataclasses.is_dataclass(hint):
        return _dataclass_converter(hint)
    raise TypeError(f"unsupported field type {hint!r}")


def _dataclass_converter(cls: Any) -> Converter:
    hints = typing.get_type_hints(cls)
    fields = [(f.name, _converter_for(hints[f.name]), _has_default(f)) for f in dataclasses.fields(cls)]
    known = frozenset(name for name, _, _ in fields)

    def convert(value: Any, path: str) -> Any:
        if type(value) is not dict:
            _fail(path, "object", value)
        unknown = value.keys() - known
        if unknown:
            raise ProtocolError(f"{path}: unknown field(s) {sorted(unknown)}")
        kwargs = {}
        for name, conv, optional in fields:
            if name in value:
                kwargs[name] = conv(value[name], f"{path}.{name}")
            elif not optional:
                raise ProtocolError(f"{path}: missing field {name!r}")
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"{path}: {exc}") from None

    return convert


def _has_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


_CONVERTERS: dict[type[Any], Callable[[Any, str], Body]] = {
    cls: _dataclass_converter(cls) for cls in BODY_TYPES.values()
}
