"""What a device can do, as announced in its heartbeats.

Capabilities travel between nodes (every heartbeat carries them), so they are a frozen value: the
codec (`swarm/codec.py`) checks every field's presence and type when a heartbeat arrives, and
`__post_init__` checks the ranges, because the scheduler filters and scores on these fields and must
be able to trust them.

Units: `memory_mb` is MiB (2**20 bytes) and `disk_free_gb` is GiB (2**30 bytes), the units `free -m`
and `df -h` show, so numbers in `swarm status` match what users see elsewhere.

`isolation` is how strongly the node walls task code off from itself, one of `ISOLATION_LEVELS`, weakest
first: "process" (a worker process of its own, with time and memory limits), "user" (also an
unprivileged user id, never the node's root), "sandbox" (also bubblewrap namespaces: a read-only system,
a private /tmp, no network unless the task asks for it). Each level includes the ones before it, so a
task that requires a level runs on any node that gives that level or a stronger one.

`Capabilities` and `swarm.messages.Requirements` are tables: each field carries a `FieldSpec` (its unit,
the values it may take and, for a requirement, the capability that meets it and how) in its dataclass
metadata. The range checks (`problems`), the job file's parser (`swarm.jobspec`) and placement's filter
(`swarm.core.placement.unmet`) are derived from those rows, so a new requirement or capability is one
field with its row, not an edit in each of them.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "AUTO_TAINT_PREFIX",
    "BATTERY_LOW_PERCENT",
    "HOT_CELSIUS",
    "ISOLATION_LEVELS",
    "TAINT_EFFECTS",
    "Capabilities",
    "FieldSpec",
    "Taint",
    "Toleration",
    "automatic_taints",
    "check_labels",
    "field_specs",
    "isolation_rank",
    "meets_isolation",
    "parse_label",
    "parse_taint",
    "problems",
    "tolerated",
]

TaintEffect = Literal["NoSchedule", "PreferNoSchedule"]
#: The effects a taint may have: NoSchedule excludes, PreferNoSchedule lowers the score.
TAINT_EFFECTS: tuple[str, ...] = ("NoSchedule", "PreferNoSchedule")
#: Keys of taints the node sets itself; owners may not use this prefix.
AUTO_TAINT_PREFIX = "swarm.io/"
#: Below this charge, off the charger, a device takes no new work.
BATTERY_LOW_PERCENT = 20.0
#: From this temperature of its hottest thermal zone a device is avoided when others can take the work.
HOT_CELSIUS = 85.0

_KEY = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._/-]{0,126}[A-Za-z0-9])?")
_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?")

#: The isolation levels, weakest to strongest: the one place that orders them.
ISOLATION_LEVELS: tuple[str, ...] = ("process", "user", "sandbox")


def isolation_rank(level: str) -> int:
    """The position of `level` in `ISOLATION_LEVELS`; ValueError naming the levels if it is unknown."""
    try:
        return ISOLATION_LEVELS.index(level)
    except ValueError:
        known = ", ".join(ISOLATION_LEVELS)
        raise ValueError(f"unknown isolation level {level!r} (weakest to strongest: {known})") from None


def meets_isolation(have: str, want: str) -> bool:
    """Whether a node giving isolation `have` may run a task that requires `want`."""
    return isolation_rank(have) >= isolation_rank(want)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One row of the capability and requirement tables: what a field holds and which values it may take.

    `low` and `high` bound a number, inclusively (None: unbounded); `named` asks for a non-empty string;
    `levels` are the values a level may take, weakest first. For a requirement, `capability` names the
    `Capabilities` field a member meets it with and `meets(have, wanted)` says whether it does; a
    requirement without them is met elsewhere (placement's constraints, the scheduler, the executor).
    `settable` requirements are the ones a job may ask for (`require:` in a job file, `--require`); the
    others are set by workflows and allocations.
    """

    unit: str = ""
    low: float | None = None
    high: float | None = None
    named: bool = False
    levels: tuple[str, ...] = ()
    capability: str = ""
    meets: Callable[[Any, Any], bool] | None = None
    settable: bool = False

    @property
    def meta(self) -> dict[str, FieldSpec]:
        """This row as the `metadata` of a dataclass field."""
        return {_SPEC: self}

    def problem(self, value: Any) -> str | None:
        """What is wrong with `value` for this field, as the end of a sentence naming it, or None."""
        if value is None:
            return None
        if self.low is not None or self.high is not None:
            # NaN fails every comparison, so a number that is not finite is out of any range.
            above = self.low is None or value >= self.low
            below = self.high is None or value <= self.high
            return None if math.isfinite(value) and above and below else f"must {self._range()}, got {value}"
        if self.named and not value:
            return "must not be empty"
        if self.levels and value not in self.levels:
            return f"is an unknown level {value!r} (weakest to strongest: {', '.join(self.levels)})"
        return None

    def _range(self) -> str:
        if self.high is None:
            return "not be negative" if self.low == 0 else f"be >= {self.low:g}"
        if self.low is None:
            return f"be <= {self.high:g}"
        return f"be in [{self.low:g}, {self.high:g}]"


_SPEC = "swarm.field_spec"


def field_specs(cls: type[Any]) -> Mapping[str, FieldSpec]:
    """The rows of a dataclass's table, by field name, in field order; a field without one has none here."""
    rows = _ROWS.get(cls)
    if rows is None:
        # Read once per class: every decoded heartbeat checks its capabilities.
        fields = dataclasses.fields(cls)
        rows = _ROWS[cls] = types.MappingProxyType(
            {f.name: f.metadata[_SPEC] for f in fields if _SPEC in f.metadata}
        )
    return rows


_ROWS: dict[type[Any], Mapping[str, FieldSpec]] = {}


def problems(record: Any) -> Iterator[tuple[str, str]]:
    """(field name, what is wrong) for every field of `record` outside its row's range: the one range check
    of capabilities and requirements."""
    for name, spec in field_specs(type(record)).items():
        problem = spec.problem(getattr(record, name))
        if problem is not None:
            yield name, problem


def _check_key(key: str, what: str) -> None:
    if not _KEY.fullmatch(key):
        raise ValueError(
            f"{what} key {key!r}: letters, digits and . _ / - (starting and ending with a letter or digit,"
            " at most 128 characters)"
        )


def _check_value(value: str, what: str) -> None:
    if not _VALUE.fullmatch(value):
        raise ValueError(
            f"{what} value {value!r}: letters, digits and . _ - (starting and ending with a letter or digit,"
            " at most 63 characters)"
        )


def check_labels(labels: tuple[tuple[str, str], ...], what: str = "label") -> None:
    """Raise ValueError unless `labels` are well-formed (key, value) pairs, sorted, each key once."""
    for pair in labels:
        if len(pair) != 2:
            raise ValueError(f"{what}: expected a [key, value] pair, got {list(pair)!r}")
        _check_key(pair[0], what)
        _check_value(pair[1], what)
    keys = [k for k, _ in labels]
    if keys != sorted(set(keys)):
        raise ValueError(f"{what}s must be sorted by key, each key once, got keys {keys}")


def parse_label(text: str) -> tuple[str, str]:
    """`key=value` -> (key, value); ValueError saying what is wrong."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"label {text!r}: expected KEY=VALUE, e.g. zone=east")
    _check_key(key, "label")
    _check_value(value, "label")
    return key, value


@dataclass(frozen=True, slots=True)
class Taint:
    """Repels tasks that do not tolerate it: `effect` NoSchedule excludes, PreferNoSchedule lowers the
    member's score."""

    key: str
    value: str = ""
    effect: TaintEffect = "NoSchedule"

    def __post_init__(self) -> None:
        """Reject a malformed key, value or effect."""
        _check_key(self.key, "taint")
        _check_value(self.value, "taint")
        if self.effect not in TAINT_EFFECTS:
            raise ValueError(f"taint effect {self.effect!r}: expected one of {', '.join(TAINT_EFFECTS)}")

    @property
    def text(self) -> str:
        """`key=value:Effect` (or `key:Effect` without a value), as `--taint` takes it."""
        return f"{self.key}{'=' + self.value if self.value else ''}:{self.effect}"


def parse_taint(text: str, *, automatic: bool = False) -> Taint:
    """`key=value:Effect` or `key:Effect` (`:Effect` may be left out: NoSchedule). Keys under
    `swarm.io/` are the node's own, refused unless `automatic`."""
    body, sep, effect = text.rpartition(":")
    if not sep or effect not in TAINT_EFFECTS:
        body, effect = text, "NoSchedule"
    key, _, value = body.partition("=")
    if key.startswith(AUTO_TAINT_PREFIX) and not automatic:
        raise ValueError(f"taint {text!r}: keys under {AUTO_TAINT_PREFIX} are set by the node itself")
    return Taint(key, value, effect)  # type: ignore[arg-type]  # checked in __post_init__


@dataclass(frozen=True, slots=True)
class Toleration:
    """Lets a task go where a matching taint is: by key and value (Equal) or key alone (Exists), for one
    effect or, with `effect` empty, for any; an empty key with Exists tolerates every taint."""

    key: str = ""
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str = ""
    effect: str = ""

    def __post_init__(self) -> None:
        """Reject a toleration that could never match, or a malformed one."""
        if self.operator not in ("Equal", "Exists"):
            raise ValueError(f"toleration operator {self.operator!r}: expected Equal or Exists")
        if self.key:
            _check_key(self.key, "toleration")
        elif self.operator != "Exists":
            raise ValueError("a toleration without a key must use operator Exists (it tolerates every taint)")
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator Exists takes no value")
        _check_value(self.value, "toleration")
        if self.effect and self.effect not in TAINT_EFFECTS:
            raise ValueError(
                f"toleration effect {self.effect!r}: expected one of {', '.join(TAINT_EFFECTS)} or none"
            )

    def matches(self, taint: Taint) -> bool:
        """Whether this toleration lets a task past `taint`."""
        if self.effect and self.effect != taint.effect:
            return False
        if not self.key:
            return True
        return self.key == taint.key and (self.operator == "Exists" or self.value == taint.value)


def tolerated(tolerations: tuple[Toleration, ...], taint: Taint) -> bool:
    """Whether any of `tolerations` matches `taint`."""
    return any(t.matches(taint) for t in tolerations)


def automatic_taints(
    battery_percent: float | None, charging: bool | None, temperature_c: float | None
) -> tuple[Taint, ...]:
    """The taints a device's state calls for now (see the module docstring)."""
    out: list[Taint] = []
    if battery_percent is not None and battery_percent < BATTERY_LOW_PERCENT and not charging:
        out.append(Taint(f"{AUTO_TAINT_PREFIX}battery-low", "", "NoSchedule"))
    if temperature_c is not None and temperature_c >= HOT_CELSIUS:
        out.append(Taint(f"{AUTO_TAINT_PREFIX}thermal-hot", "", "PreferNoSchedule"))
    return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    """A device's static capabilities, probed once at start-up; keyword arguments only, because eleven
    fields in a row are too easy to give in the wrong order.

    `battery_percent` and `charging` are None when the device has no battery or it could not be read;
    `charging` means "on external power" (a full battery on the charger counts), because what the
    scheduler wants to know is whether work drains the battery.
    """

    cores: int = field(metadata=FieldSpec(unit="cores", low=1).meta)
    memory_mb: int = field(metadata=FieldSpec(unit="MiB", low=0).meta)
    disk_free_gb: float = field(metadata=FieldSpec(unit="GiB", low=0).meta)
    platform: str = field(metadata=FieldSpec(named=True).meta)
    arch: str = field(metadata=FieldSpec(named=True).meta)
    gpu: bool
    battery_percent: float | None = field(metadata=FieldSpec(unit="%", low=0, high=100).meta)
    charging: bool | None
    termux: bool
    role: str = field(metadata=FieldSpec(named=True).meta)
    hostname: str
    isolation: str = field(default="process", metadata=FieldSpec(levels=ISOLATION_LEVELS).meta)
    #: The workflow runtimes this node offers (PYTHON, SHELL, JVM, MAPREDUCE, SWARM), see `swarm.runtimes`.
    runtimes: tuple[str, ...] = ()
    #: The owner's labels, sorted (key, value) pairs.
    labels: tuple[tuple[str, str], ...] = ()
    #: The owner's taints and the automatic ones (keys under `swarm.io/`).
    taints: tuple[Taint, ...] = ()

    def __post_init__(self) -> None:
        """Reject values no real device has, whichever way the object was built."""
        first = next(problems(self), None)
        if first is not None:
            raise ValueError(f"capabilities: field {first[0]!r} {first[1]}")
        try:
            check_labels(self.labels)
        except ValueError as exc:
            raise ValueError(f"capabilities: field 'labels': {exc}") from None

    def label_map(self) -> dict[str, str]:
        """The labels as a mapping."""
        return dict(self.labels)
