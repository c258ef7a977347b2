"""What a device can do, as announced in its heartbeats.

Capabilities travel between nodes (every heartbeat carries them), so they are a frozen value with a
plain-dict form for the codec. `from_dict` is the one place a peer's capabilities are checked: the
scheduler filters and scores on these fields and must be able to trust their types and ranges.
Unknown keys are ignored so that a newer peer announcing extra fields does not get rejected by an
older one.

Units: `memory_mb` is MiB (2**20 bytes) and `disk_free_gb` is GiB (2**30 bytes), the units `free -m`
and `df -h` show, so numbers in `swarm status` match what users see elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["Capabilities"]

_INT_FIELDS = ("cores", "memory_mb")
_FLOAT_FIELDS = ("disk_free_gb",)
_STR_FIELDS = ("platform", "arch", "role", "hostname")
_BOOL_FIELDS = ("gpu", "termux")
_OPTIONAL_FLOAT_FIELDS = ("battery_percent",)
_OPTIONAL_BOOL_FIELDS = ("charging",)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """A device's static capabilities, probed once at start-up.

    `battery_percent` and `charging` are None when the device has no battery or it could not be read;
    `charging` means "on external power" (a full battery on the charger counts), because what the
    scheduler wants to know is whether work drains the battery.
    """

    cores: int
    memory_mb: int
    disk_free_gb: float
    platform: str
    arch: str
    gpu: bool
    battery_percent: float | None
    charging: bool | None
    termux: bool
    role: str
    hostname: str

    def __post_init__(self) -> None:
        """Reject values no real device has, whichever way the object was built."""
        if self.cores < 1:
            raise ValueError(f"capabilities: field 'cores' must be >= 1, got {self.cores}")
        if self.memory_mb < 0:
            raise ValueError(f"capabilities: field 'memory_mb' must be >= 0, got {self.memory_mb}")
        if not math.isfinite(self.disk_free_gb) or self.disk_free_gb < 0:
            raise ValueError(f"capabilities: field 'disk_free_gb' must be >= 0, got {self.disk_free_gb}")
        if self.battery_percent is not None and not 0.0 <= self.battery_percent <= 100.0:
            raise ValueError(
                f"capabilities: field 'battery_percent' must be in [0, 100], got {self.battery_percent}"
            )
        for name in ("platform", "arch", "role"):
            if not getattr(self, name):
                raise ValueError(f"capabilities: field {name!r} must not be empty")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict with one key per field."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Any) -> Capabilities:
        """Build capabilities from a peer's dict, checking every field's presence and type.

        Raises:
            ValueError: naming the first missing or ill-typed field.
        """
        if not isinstance(data, dict):
            raise ValueError(f"capabilities: expected an object, got {type(data).__name__}")
        values: dict[str, Any] = {}
        for name in _INT_FIELDS:
            values[name] = _get(data, name, _is_int, "an integer")
        for name in _FLOAT_FIELDS:
            values[name] = float(_get(data, name, _is_number, "a number"))
        for name in _STR_FIELDS:
            values[name] = _get(data, name, _is_str, "a string")
        for name in _BOOL_FIELDS:
            values[name] = _get(data, name, _is_bool, "a boolean")
        for name in _OPTIONAL_FLOAT_FIELDS:
            value = _get(data, name, lambda v: v is None or _is_number(v), "a number or null")
            values[name] = None if value is None else float(value)
        for name in _OPTIONAL_BOOL_FIELDS:
            values[name] = _get(data, name, lambda v: v is None or _is_bool(v), "a boolean or null")
        return cls(**values)


def _get(data: dict[Any, Any], name: str, check: Callable[[object], bool], expected: str) -> Any:
    """Fetch `name` from `data`, raising a ValueError that names the field when it is wrong."""
    if name not in data:
        raise ValueError(f"capabilities: missing field {name!r}")
    value = data[name]
    if not check(value):
        raise ValueError(
            f"capabilities: field {name!r} must be {expected}, got {type(value).__name__} {value!r}"
        )
    return value


def _is_int(value: object) -> bool:
    # bool is a subclass of int; a peer sending `true` for cores is a bug we want to see.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)
