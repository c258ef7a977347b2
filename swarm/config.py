"""Node and client settings: defaults, then the TOML file, then the environment, then command-line flags.

The TOML file (``--config FILE``, or ``$SWARM_CONFIG``, or ``~/.config/swarm/config.toml`` if present)::

    [node]
    cluster = "home"          # also $SWARM_CLUSTER
    broker = "mqtt://pi.local:1883"   # also $SWARM_BROKER; unset: find one over mDNS or start one
    name = "kitchen-pi"
    data_dir = "/var/lib/swarm"
    slots = 2
    role = "worker"
    embedded_broker = true

    [tasks]
    allow_command = false
    allow_file_operations = false
    allowed_paths = ["/srv/swarm"]
    memory_limit_mb = 512

    [timeouts]                # seconds; heartbeat < failure < election is enforced
    heartbeat_interval = 0.5
    failure_timeout = 3.0
    election_timeout = 4.0
    pending_timeout = 300.0

    [mapreduce]
    spill_threshold_mb = 256  # a map task sorts and spills runs to disk past this much buffered data

    [placement]               # weights of the placement score
    free_cpu = 1.0
    free_memory = 0.5
    load = 2.0
    latency = 0.5
    battery = 1.0
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from swarm.core.config import CoreConfig, PlacementWeights
from swarm.errors import ConfigError
from swarm.taskapi import TaskPolicy

__all__ = ["DEFAULT_BROKER_PORT", "NodeConfig", "load_config", "parse_broker_url"]

DEFAULT_BROKER_PORT = 1883
_TIMEOUT_KEYS = {
    "heartbeat_interval",
    "failure_timeout",
    "election_timeout",
    "tick_interval",
    "pending_timeout",
    "takeover_grace",
    "unacked_result_ttl",
    "finished_job_retention",
}


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything `swarm join` and the client commands need."""

    cluster: str = "default"
    broker: str | None = None
    name: str = field(default_factory=socket.gethostname)
    data_dir: Path | None = None
    embedded_broker: bool = True
    mdns_timeout: float = 2.0
    max_message_bytes: int = 16 * 1024 * 1024
    memory_limit_mb: int | None = None
    spill_threshold_mb: int = 256
    policy: TaskPolicy = field(default_factory=TaskPolicy)
    core: CoreConfig = field(default_factory=CoreConfig)


def parse_broker_url(url: str) -> tuple[str, int]:
    """`mqtt://host:port` (or `host:port`, or `host`) -> (host, port)."""
    parsed = urlparse(url if "://" in url else f"mqtt://{url}")
    if parsed.scheme not in ("mqtt", "tcp") or not parsed.hostname:
        raise ConfigError(f"broker must look like mqtt://host:port, got {url!r}")
    try:
        port = parsed.port or DEFAULT_BROKER_PORT
    except ValueError:
        raise ConfigError(f"bad port in broker url {url!r}") from None
    return parsed.hostname, port


def _default_config_path() -> Path | None:
    env = os.environ.get("SWARM_CONFIG")
    if env:
        return Path(env)
    path = Path.home() / ".config" / "swarm" / "config.toml"
    return path if path.exists() else None


def _read_toml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None


def load_config(path: Path | None = None, **flags: Any) -> NodeConfig:
    """Build the configuration; flags whose value is None do not override anything."""
    data = _read_toml(path or _default_config_path())
    node = dict(data.get("node", {}))
    tasks = dict(data.get("tasks", {}))
    timeouts = dict(data.get("timeouts", {}))
    placement = dict(data.get("placement", {}))
    mapreduce = dict(data.get("mapreduce", {}))
    if set(mapreduce) - {"spill_threshold_mb"}:
        raise ConfigError(f"[mapreduce]: unknown key(s) {sorted(set(mapreduce) - {'spill_threshold_mb'})}")
    if "spill_threshold_mb" in mapreduce:
        node["spill_threshold_mb"] = int(mapreduce["spill_threshold_mb"])
    for env_key, key in (("SWARM_BROKER", "broker"), ("SWARM_CLUSTER", "cluster")):
        if os.environ.get(env_key):
            node[key] = os.environ[env_key]
    node.update({k: v for k, v in flags.items() if v is not None and k not in ("slots", "role")})
    core_kwargs: dict[str, Any] = {k: v for k, v in timeouts.items() if k in _TIMEOUT_KEYS}
    unknown = set(timeouts) - _TIMEOUT_KEYS
    if unknown:
        raise ConfigError(f"[timeouts]: unknown key(s) {sorted(unknown)}")
    for key in ("slots", "role"):
        value = flags.get(key) if flags.get(key) is not None else node.pop(key, None)
        if value is not None:
            core_kwargs[key] = value
    node.pop("slots", None)
    node.pop("role", None)
    core_kwargs.setdefault("slots", max(1, os.cpu_count() or 1))
    try:
        weights = PlacementWeights(**placement)
        core = CoreConfig(weights=weights, **core_kwargs)
        policy = TaskPolicy(
            allow_command=bool(tasks.pop("allow_command", False)),
            allow_file_operations=bool(tasks.pop("allow_file_operations", False)),
            allowed_paths=tuple(str(Path(p).expanduser()) for p in tasks.pop("allowed_paths", ())),
        )
        memory = tasks.pop("memory_limit_mb", None)
        if tasks:
            raise ConfigError(f"[tasks]: unknown key(s) {sorted(tasks)}")
        if "data_dir" in node and node["data_dir"] is not None:
            node["data_dir"] = Path(node["data_dir"]).expanduser()
        known = {f.name for f in dataclasses.fields(NodeConfig)}
        bad = set(node) - known
        if bad:
            raise ConfigError(f"[node]: unknown key(s) {sorted(bad)}")
        config = NodeConfig(core=core, policy=policy, memory_limit_mb=memory, **node)
    except TypeError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    if config.broker is not None:
        parse_broker_url(config.broker)
    return config
