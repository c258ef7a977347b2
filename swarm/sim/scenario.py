"""Scenarios as data: a device mix, a workload, a fault schedule and fault rates, read from TOML.

A scenario file is validated completely when it is loaded, and every error names the file and the key at
fault, because a misspelt key silently ignored would make a sweep test something other than intended.
The named scenarios live in `swarm/sim/scenarios/*.toml`; `docs/simulator.md` describes every key.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from swarm.core.config import CoreConfig
from swarm.devices.profiles import BUILTIN_PROFILES, DeviceProfile
from swarm.errors import ConfigError, InvalidSpec
from swarm.sim.cpu import CpuModel
from swarm.sim.faults import FAULTS, NodeFault, ScheduledFault
from swarm.workflow.cron import CronExpr

__all__ = [
    "SCENARIO_DIR",
    "DeviceGroup",
    "FaultRates",
    "Scenario",
    "Workload",
    "load_scenario",
    "named_scenarios",
]

SCENARIO_DIR = Path(__file__).parent / "scenarios"

WORKLOAD_KINDS = ("batch", "mapreduce", "dag")
#: Keys only a batch workload takes, and keys only a MapReduce one takes (and needs).
_BATCH_KEYS = ("tasks", "priority", "fail_p")
_MAPREDUCE_KEYS = ("maps", "reduces", "words")
#: The keys of each kind; any other kind's key is refused. A DAG workload needs `steps`.
_KIND_KEYS = {
    "batch": _BATCH_KEYS,
    "mapreduce": _MAPREDUCE_KEYS,
    "dag": ("steps", "fan_out", "fail_p", "cron", "catchup"),
}
_REQUIRED = {"batch": ("tasks",), "mapreduce": _MAPREDUCE_KEYS, "dag": ("steps",)}
CATCHUP = ("NONE", "LATEST", "ALL")
#: Seconds of one map and one reduce on a speed-1 device when a MapReduce workload gives no `cost`.
MAPREDUCE_COST = (0.2, 1.0)
#: Keys every `[[faults]]` table may give; the rest belong to its kind (`swarm.sim.faults`).
_FAULT_COMMON = ("at", "kind", "target", "duration")


@dataclass(frozen=True, slots=True)
class DeviceGroup:
    """`count` devices of one profile; churn and clock skew may be overridden for the scenario."""

    profile: DeviceProfile
    count: int
    skew_s: float = 0.0
    leave_fraction: float = 0.0


@dataclass(frozen=True, slots=True)
class Workload:
    """What is submitted at `at`, by `kind`.

    * "batch": `jobs` jobs of `tasks` tasks in all, each costing between `cost[0]` and `cost[1]` seconds
      on a laptop.
    * "mapreduce": `jobs` word counts (`swarm.sim.mapreduce`), each of `maps` map and `reduces` reduce
      tasks over a corpus of `words` words generated from the run's seed; `cost` is then the seconds
      of one map and of one reduce on a speed-1 device.
    * "dag": `jobs` runs of random DAGs (`swarm.sim.dags`) of 2 to `steps` steps, fanned out up to
      `fan_out`, each step doomed to fail with `fail_p`; `cost` is a step's range of seconds. With a
      `cron` expression, `jobs` DAGs are scheduled instead (`swarm.sim.schedules`): created at `at`,
      every slot up to the scenario's `duration` fires once, with the `catchup` policy.
    """

    at: float
    jobs: int = 1
    tasks: int = 0
    cost: tuple[float, float] = (0.01, 0.05)
    priority: tuple[int, int] = (0, 4)
    fail_p: float = 0.0
    max_retries: int = 3
    timeout: float | None = None
    kind: str = "batch"
    maps: int = 0
    reduces: int = 0
    words: int = 0
    steps: int = 0
    fan_out: int = 3
    cron: str = ""
    catchup: str = "ALL"

    @property
    def task_count(self) -> int:
        """Tasks this workload submits in all."""
        if self.kind == "mapreduce":
            return self.jobs * (self.maps + self.reduces)
        if self.kind == "dag":
            return self.jobs * self.steps  # at most, before fan-out; scheduled runs repeat it per slot
        return max(self.tasks // self.jobs, 1) * self.jobs


@dataclass(frozen=True, slots=True)
class FaultRates:
    """Random faults over the whole cluster, as events per virtual second, during the scenario."""

    crash: float = 0.0
    partition: float = 0.0
    slow: float = 0.0
    down_s: tuple[float, float] = (5.0, 30.0)
    partition_s: tuple[float, float] = (2.0, 10.0)
    slow_s: tuple[float, float] = (5.0, 30.0)
    lose_disk: float = 0.0


@dataclass(frozen=True, slots=True)
class Scenario:
    """A whole run's description; `duration` is when faults stop, `drain` the time allowed after it."""

    name: str
    description: str
    duration: float
    drain: float
    devices: tuple[DeviceGroup, ...]
    workload: tuple[Workload, ...]
    faults: tuple[ScheduledFault, ...] = ()
    rates: FaultRates = field(default_factory=FaultRates)
    config: dict[str, Any] = field(default_factory=dict)
    keep_retained: bool = True
    max_queued: int | None = None
    session_expiry: float | None = None
    cpu: CpuModel | None = None

    @property
    def node_count(self) -> int:
        """Devices in all."""
        return sum(g.count for g in self.devices)

    def core_config(self) -> CoreConfig:
        """Coarser ticks than a real node's keep hundreds of simulated nodes cheap; the file may override."""
        base: dict[str, Any] = {
            "heartbeat_interval": 1.0,
            "failure_timeout": 4.0,
            "election_timeout": 6.0,
            "tick_interval": 0.25,
        }
        return CoreConfig(**(base | self.config))

    def with_nodes(self, total: int) -> Scenario:
        """The same mix scaled to `total` devices (each group at least one)."""
        scale = total / max(self.node_count, 1)
        groups = [dataclasses.replace(g, count=max(1, round(g.count * scale))) for g in self.devices]
        groups[-1] = dataclasses.replace(groups[-1], count=max(1, total - sum(g.count for g in groups[:-1])))
        return dataclasses.replace(self, devices=tuple(groups))


def named_scenarios() -> dict[str, Path]:
    """The scenarios shipped with swarm, by name."""
    return {p.stem: p for p in sorted(SCENARIO_DIR.glob("*.toml"))}


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load a named scenario or a TOML file; raises `ConfigError` naming the file and key at fault."""
    path = named_scenarios().get(str(name_or_path)) or Path(name_or_path)
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        known = ", ".join(named_scenarios())
        raise ConfigError(f"{name_or_path}: no such scenario or file (named: {known}): {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    try:
        return _scenario(doc, path.stem)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


_TOP = {
    "name",
    "description",
    "duration",
    "drain",
    "devices",
    "workload",
    "faults",
    "rates",
    "config",
    "broker",
    "cpu",
}


def _scenario(doc: dict[str, Any], stem: str) -> Scenario:
    _no_extra("", doc, _TOP)
    devices = tuple(_group(i, t) for i, t in enumerate(_tables(doc, "devices")))
    if not devices:
        raise ValueError("'devices' needs at least one [[devices]] table")
    broker = _table(doc.get("broker", {}), "broker")
    _no_extra("broker.", broker, {"keep_retained", "max_queued", "session_expiry"})
    config = _table(doc.get("config", {}), "config")
    scenario = Scenario(
        name=str(doc.get("name", stem)),
        description=str(doc.get("description", "")),
        duration=_num(doc, "duration", "", 60.0, minimum=0.0),
        drain=_num(doc, "drain", "", 120.0, minimum=0.0),
        devices=devices,
        workload=tuple(_workload(i, t) for i, t in enumerate(_tables(doc, "workload"))),
        faults=tuple(_fault(i, t) for i, t in enumerate(_tables(doc, "faults"))),
        rates=_from_table(FaultRates, "rates.", _table(doc.get("rates", {}), "rates")),
        config=dict(config),
        keep_retained=bool(broker.get("keep_retained", True)),
        max_queued=broker.get("max_queued"),
        session_expiry=broker.get("session_expiry"),
        cpu=_cpu(doc["cpu"]) if "cpu" in doc else None,
    )
    try:
        scenario.core_config()
    except (ConfigError, TypeError) as exc:
        raise ValueError(f"config: {exc}") from exc
    return scenario


def _cpu(value: Any) -> CpuModel:
    """The `[cpu]` table: shared hosts and what a step costs (`swarm.sim.cpu`)."""
    model: CpuModel = _from_table(CpuModel, "cpu.", _table(value, "cpu"))
    for key in ("hosts", "cores"):
        if not isinstance(value.get(key, 1), int):
            raise ValueError(f"cpu.{key} must be a whole number, got {value[key]!r}")
    return model


def _group(i: int, t: dict[str, Any]) -> DeviceGroup:
    where = f"devices[{i}]."
    _no_extra(where, t, {"profile", "count", "skew_s", "leave_fraction", "mean_up_s", "mean_down_s"})
    name = t.get("profile")
    if name not in BUILTIN_PROFILES:
        raise ValueError(f"{where}profile must be one of {', '.join(BUILTIN_PROFILES)}, got {name!r}")
    profile = BUILTIN_PROFILES[name]
    if "mean_up_s" in t or "mean_down_s" in t:
        up, down = t.get("mean_up_s"), t.get("mean_down_s")
        profile = dataclasses.replace(
            profile, mean_up_s=float(up) if up else None, mean_down_s=float(down) if down else None
        )
    count = t.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"{where}count must be a positive integer, got {count!r}")
    leave = _num(t, "leave_fraction", where, 0.0, minimum=0.0)
    if leave > 1:
        raise ValueError(f"{where}leave_fraction must be in [0, 1], got {leave}")
    return DeviceGroup(profile, count, _num(t, "skew_s", where, 0.0, minimum=0.0), leave)


def _workload(i: int, t: dict[str, Any]) -> Workload:
    """A workload table; which keys it needs and takes depends on its kind."""
    where = f"workload[{i}]."
    kind = t.get("kind", "batch")
    if kind not in WORKLOAD_KINDS:
        raise ValueError(f"{where}kind must be one of {', '.join(WORKLOAD_KINDS)}, got {kind!r}")
    # A key of the other kind would be silently ignored: refuse it, like any unknown key.
    others = {key for k, keys in _KIND_KEYS.items() if k != kind for key in keys} - set(_KIND_KEYS[kind])
    stray = sorted(set(t) & others)
    if stray:
        raise ValueError(f"{where}{stray[0]} does not apply to kind = {kind!r}")
    table = dict(t)
    # A MapReduce cost is [map, reduce], not a [low, high] range: any order is fine.
    cost = table.pop("cost", None) if kind == "mapreduce" else None
    load: Workload = _from_table(Workload, where, table)
    required = _REQUIRED[kind]
    for key in ("jobs", *required):
        if key in required and key not in t:
            raise ValueError(f"{where}{key} is required (kind = {kind!r})")
        if getattr(load, key) < 1:
            raise ValueError(f"{where}{key} must be a positive integer (kind = {kind!r}), got {t.get(key)!r}")
    if kind == "mapreduce":
        if cost is None:
            cost = list(MAPREDUCE_COST)
        if not (isinstance(cost, list) and len(cost) == 2 and all(_is_num(v) and v >= 0 for v in cost)):
            raise ValueError(f"{where}cost must be [map seconds, reduce seconds], both >= 0, got {cost!r}")
        load = dataclasses.replace(load, cost=(float(cost[0]), float(cost[1])))
    if kind == "dag":
        if load.fail_p > 1:
            raise ValueError(f"{where}fail_p must be in [0, 1], got {load.fail_p}")
        if load.catchup not in CATCHUP:
            raise ValueError(f"{where}catchup must be one of {', '.join(CATCHUP)}, got {load.catchup!r}")
        if load.cron:
            try:
                CronExpr.parse(load.cron)
            except InvalidSpec as exc:
                raise ValueError(f"{where}cron: {exc}") from None
    return load


def _fault(i: int, t: dict[str, Any]) -> ScheduledFault:
    """A `[[faults]]` table: the common keys, then the keys its kind declares (its dataclass fields)."""
    where = f"faults[{i}]."
    name = t.get("kind")
    kind = FAULTS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise ValueError(f"{where}kind must be one of {', '.join(FAULTS)}, got {name!r}")
    own = {f.name for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
    others = {f.name for k in FAULTS.values() for f in dataclasses.fields(k)}  # type: ignore[arg-type]
    stray = sorted(set(t) & others - own)
    if stray:
        raise ValueError(f"{where}{stray[0]} does not apply to kind = {name!r}")
    if "target" in t and not issubclass(kind, NodeFault):
        raise ValueError(f"{where}target does not apply to kind = {name!r} (it strikes no one node)")
    _no_extra(where, t, own | set(_FAULT_COMMON))
    if "at" not in t:
        raise ValueError(f"{where}at is required")
    target = t.get("target", "random")
    if not isinstance(target, str):
        raise ValueError(f"{where}target must be a string, got {target!r}")
    fault = _from_table(kind, where, {k: v for k, v in t.items() if k not in _FAULT_COMMON})
    try:
        fault.check()
    except ValueError as exc:
        raise ValueError(f"{where}{exc}") from None
    duration = _num(t, "duration", where, None, minimum=0.0) if "duration" in t else None
    return ScheduledFault(_num(t, "at", where, None, minimum=0.0), fault, target, duration)


def _from_table(cls: Any, where: str, t: dict[str, Any]) -> Any:
    """Build a dataclass from a table, checking names, types and that numbers are not negative."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _no_extra(where, t, set(fields))
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in t.items():
        kind = str(fields[key].type)
        if get_origin(hints[key]) is Literal:
            choices = get_args(hints[key])
            if value not in choices:
                raise ValueError(f"{where}{key} must be one of {', '.join(choices)}, got {value!r}")
            values[key] = value
        elif kind.startswith("tuple"):
            if not (isinstance(value, list) and len(value) == 2 and all(_is_num(v) for v in value)):
                raise ValueError(f"{where}{key} must be a pair [low, high], got {value!r}")
            if value[0] > value[1] or value[0] < 0:
                raise ValueError(f"{where}{key} must be [low, high] with 0 <= low <= high, got {value!r}")
            values[key] = tuple(value)
        elif kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{where}{key} must be true or false, got {value!r}")
            values[key] = value
        elif kind == "str":
            if not isinstance(value, str):
                raise ValueError(f"{where}{key} must be a string, got {value!r}")
            values[key] = value
        else:
            values[key] = _num(t, key, where, None, minimum=0.0)
    missing = [n for n, f in fields.items() if f.default is dataclasses.MISSING and n not in values]
    if missing:
        raise ValueError(f"{where}{missing[0]} is required")
    for key in (
        "jobs",
        "tasks",
        "max_retries",
        "maps",
        "reduces",
        "words",
        "steps",
        "fan_out",
        "hosts",
        "cores",
    ):
        if key in values:
            values[key] = int(values[key])
    return cls(**values)


def _num(t: dict[str, Any], key: str, where: str, default: float | None, minimum: float) -> Any:
    value = t.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{where}{key} must be a number >= {minimum:g}, got {value!r}")
    return value


def _is_num(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _tables(doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ValueError(f"'{key}' must be an array of tables ([[{key}]])")
    return value


def _table(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"'{key}' must be a table ([{key}])")
    return value


def _no_extra(where: str, t: dict[str, Any], known: set[str]) -> None:
    extra = sorted(set(t) - known)
    if extra:
        raise ValueError(f"unknown key {where}{extra[0]} (known: {', '.join(sorted(known))})")
