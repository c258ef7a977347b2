"""Device profiles: how a kind of device behaves, for the simulator.

A simulated node gets its CPU speed, memory, link quality and churn from a profile, so a scenario can
say "150 phones, 40 Pis, 10 laptops" and exercise the scheduler and failure handling against a
realistic mix. The built-in numbers are deliberately rough orders of magnitude, not benchmarks.

User-defined profiles come from a TOML file, one table per profile::

    [profiles.tablet]
    base = "phone"        # optional: start from a built-in (or earlier) profile
    cpu_speed = 0.5
    memory_mb = 4096

Without `base`, every field except `mean_up_s`/`mean_down_s` must be given. TOML has no null, so an
absent `mean_up_s`/`mean_down_s` means the device never churns. Unknown keys are errors, because a
misspelt `jiter_ms` silently ignored would make a scenario test something other than intended.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarm.devices.capabilities import Capabilities
from swarm.errors import ConfigError

__all__ = ["BUILTIN_PROFILES", "DeviceProfile", "load_profiles", "simulated_capabilities"]

_SIMULATED = Capabilities(
    cores=4,
    memory_mb=4096,
    disk_free_gb=32.0,
    platform="linux",
    arch="x86_64",
    gpu=False,
    battery_percent=None,
    charging=None,
    termux=False,
    role="worker",
    hostname="sim",
)


def simulated_capabilities(hostname: str, **fields: Any) -> Capabilities:
    """The capabilities of a simulated device, or one a test makes up: a Linux x86_64 worker with 4 cores,
    4 GiB of memory and 32 GiB free, no GPU and no battery, but for the `fields` given."""
    return dataclasses.replace(_SIMULATED, hostname=hostname, **fields)


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """How one kind of device computes, connects and churns.

    `cpu_speed` is relative to a laptop (1.0), so a task taking 2 s on a laptop takes 2 / cpu_speed
    seconds here. `loss` is the probability in 0..1 that a message on this device's link is lost.
    Churn (`mean_up_s`, `mean_down_s`) is the mean of exponentially distributed up and down periods;
    both None means the device stays up.
    """

    name: str
    cpu_speed: float
    cores: int
    memory_mb: int
    latency_ms: float
    jitter_ms: float
    loss: float
    battery: bool
    mean_up_s: float | None = None
    mean_down_s: float | None = None

    def __post_init__(self) -> None:
        """Check ranges here so a bad profile fails where it is defined, not mid-simulation."""
        if not self.name:
            raise ValueError("field 'name' must not be empty")
        _check_positive("cpu_speed", self.cpu_speed)
        if self.cores < 1:
            raise ValueError(f"field 'cores' must be >= 1, got {self.cores}")
        if self.memory_mb < 1:
            raise ValueError(f"field 'memory_mb' must be >= 1, got {self.memory_mb}")
        for name in ("latency_ms", "jitter_ms"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"field {name!r} must be >= 0, got {value}")
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"field 'loss' must be in [0, 1], got {self.loss}")
        if (self.mean_up_s is None) != (self.mean_down_s is None):
            raise ValueError("fields 'mean_up_s' and 'mean_down_s' must be given together or not at all")
        if self.mean_up_s is not None:
            _check_positive("mean_up_s", self.mean_up_s)
        if self.mean_down_s is not None:
            _check_positive("mean_down_s", self.mean_down_s)


def _check_positive(name: str, value: float) -> None:
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"field {name!r} must be > 0, got {value}")


BUILTIN_PROFILES: dict[str, DeviceProfile] = {
    p.name: p
    for p in (
        # An older phone on Wi-Fi: slow, lossy, and often gone (screen off, out of range, killed).
        DeviceProfile("phone", 0.3, 4, 3072, 40.0, 25.0, 0.01, True, mean_up_s=1800.0, mean_down_s=300.0),
        # A Raspberry Pi 4 on Ethernet: slow but steady.
        DeviceProfile("pi", 0.25, 4, 4096, 2.0, 1.0, 0.001, False),
        # A laptop on Wi-Fi that sleeps when its lid closes.
        DeviceProfile("laptop", 1.0, 8, 16384, 5.0, 3.0, 0.002, True, mean_up_s=7200.0, mean_down_s=900.0),
        # A wired server in a closet.
        DeviceProfile("server", 2.0, 32, 65536, 0.5, 0.2, 0.0, False),
    )
}

_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "cpu_speed": (int, float),
    "cores": (int,),
    "memory_mb": (int,),
    "latency_ms": (int, float),
    "jitter_ms": (int, float),
    "loss": (int, float),
    "battery": (bool,),
    "mean_up_s": (int, float),
    "mean_down_s": (int, float),
}


def load_profiles(path: Path | str) -> dict[str, DeviceProfile]:
    """Read the user-defined profiles in a TOML file (the built-ins are not included).

    A profile may name a built-in to override it. Combine with `BUILTIN_PROFILES | load_profiles(p)`.

    Raises:
        ConfigError: naming the file, the profile and the field at fault.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            document = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read profiles: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    extra = sorted(set(document) - {"profiles"})
    if extra:
        raise ConfigError(f"{path}: unknown top-level key {extra[0]!r} (profiles go under [profiles.<name>])")
    tables = document.get("profiles", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: 'profiles' must be a table of [profiles.<name>] tables")
    result: dict[str, DeviceProfile] = {}
    for name, table in tables.items():
        known = BUILTIN_PROFILES | result
        try:
            result[name] = _profile_from_table(name, table, known)
        except ValueError as exc:
            raise ConfigError(f"{path}: profile {name!r}: {exc}") from exc
    return result


def _profile_from_table(name: str, table: Any, known: dict[str, DeviceProfile]) -> DeviceProfile:
    """Turn one TOML table into a profile; ValueError messages name the field."""
    if not isinstance(table, dict):
        raise ValueError("must be a table")
    values: dict[str, Any] = {}
    base_name = table.get("base")
    if base_name is not None:
        if not isinstance(base_name, str) or base_name not in known:
            raise ValueError(f"field 'base' must name a known profile ({', '.join(sorted(known))})")
        values = dataclasses.asdict(known[base_name])
    for key, value in table.items():
        if key == "base":
            continue
        if key not in _FIELD_TYPES:
            raise ValueError(f"unknown field {key!r} (known: {', '.join(_FIELD_TYPES)})")
        expected = _FIELD_TYPES[key]
        if not _matches(value, expected):
            raise ValueError(f"field {key!r} must be {_describe(expected)}, got {value!r}")
        values[key] = float(value) if float in expected else value
    values["name"] = name
    missing = [f.name for f in dataclasses.fields(DeviceProfile) if f.name not in values and _required(f)]
    if missing:
        raise ValueError(f"missing field {missing[0]!r}")
    return DeviceProfile(**values)


def _matches(value: object, expected: tuple[type, ...]) -> bool:
    """Type check where `true` is not a number, though bool subclasses int."""
    if isinstance(value, bool) and bool not in expected:
        return False
    return isinstance(value, expected)


def _required(field: dataclasses.Field[Any]) -> bool:
    return field.default is dataclasses.MISSING


def _describe(expected: tuple[type, ...]) -> str:
    if expected == (bool,):
        return "true or false"
    if expected == (int,):
        return "an integer"
    return "a number"
