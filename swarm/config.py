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
    broker_username = "n-1ad6b476"   # also $SWARM_BROKER_USERNAME; the login at a broker you run
    broker_password = "..."          # also $SWARM_BROKER_PASSWORD (or user:password@ in the URL)
    broker_ca = "~/.config/swarm/broker-ca.pem"  # also $SWARM_BROKER_CA: the CA of its TLS certificate
    labels = {zone = "east", security = "public"}   # or ["zone=east"]; also `swarm join --label k=v`
    taints = ["dedicated=gpu:NoSchedule"]  # KEY[=VALUE][:NoSchedule|PreferNoSchedule]; `--taint`

    [tasks]
    allow_command = false     # true/false only (a quoted "false" is an error, not a yes)
    allow_file_operations = false
    allowed_paths = ["/srv/swarm"]
    allowed_commands = ["/usr/bin/ls", "python3"]  # what `command` may run; names are resolved on
                              # the node's PATH when the config is loaded; empty: nothing at all
    default_timeout_s = 300   # an attempt whose task names no timeout is killed after this; 0: never
    memory_limit_mb = 1024    # address space a task may add to its worker (the default); 0: no limit
    run_as = "nobody"         # the user task code runs as when the node runs as root (the default)

    [timeouts]                # seconds; heartbeat < failure < election is enforced
    heartbeat_interval = 0.5
    failure_timeout = 2.5
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
from urllib.parse import unquote, urlparse

from swarm.core.config import CoreConfig, PlacementWeights
from swarm.devices.capabilities import Taint, parse_label, parse_taint
from swarm.errors import ConfigError
from swarm.plugins.command import resolve_commands
from swarm.taskapi import DEFAULT_MEMORY_LIMIT_MB, DEFAULT_TIMEOUT_S, TaskPolicy

__all__ = [
    "DEFAULT_BROKER_PORT",
    "DEFAULT_TLS_BROKER_PORT",
    "BrokerUrl",
    "NodeConfig",
    "load_config",
    "parse_broker_url",
]

DEFAULT_BROKER_PORT = 1883
DEFAULT_TLS_BROKER_PORT = 8883
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
    broker_username: str | None = None
    broker_password: str | None = field(default=None, repr=False)
    broker_ca: Path | None = None
    memory_limit_mb: int | None = DEFAULT_MEMORY_LIMIT_MB
    spill_threshold_mb: int = 256
    #: Where the HTTP API listens, HOST:PORT (port 0: any free one); empty: no API. Loopback by default,
    #: as its bearer tokens are credentials: open it to the LAN only behind TLS or on a trusted network.
    api: str = "127.0.0.1:0"
    policy: TaskPolicy = field(default_factory=TaskPolicy)
    core: CoreConfig = field(default_factory=CoreConfig)
    #: The owner's labels (sorted key/value pairs) and taints, announced in the node's capabilities.
    labels: tuple[tuple[str, str], ...] = ()
    taints: tuple[Taint, ...] = ()


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """Where a broker is and how to log in, as a broker URL says it."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_broker_url(url: str) -> BrokerUrl:
    """Parse `mqtt://host:port`, `mqtts://host:port` (TLS), either with `user:password@` before the host,
    or a bare `host:port` or `host` (plain MQTT). The port defaults to 1883, or 8883 with TLS;
    user and password are percent-decoded."""
    parsed = urlparse(url if "://" in url else f"mqtt://{url}")
    # Error messages show the URL without its password: they end up in logs.
    shown = url.replace(f":{parsed.password}@", ":***@") if parsed.password else url
    if parsed.scheme not in ("mqtt", "tcp", "mqtts") or not parsed.hostname:
        raise ConfigError(
            f"broker must look like mqtt://host:port or mqtts://user:password@host:port, got {shown!r}"
        )
    tls = parsed.scheme == "mqtts"
    try:
        port = parsed.port or (DEFAULT_TLS_BROKER_PORT if tls else DEFAULT_BROKER_PORT)
    except ValueError:
        raise ConfigError(f"bad port in broker url {shown!r}") from None
    username = unquote(parsed.username) if parsed.username else None
    password = unquote(parsed.password) if parsed.password is not None else None
    return BrokerUrl(parsed.hostname, port, tls, username, password)


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


def _tasks_bool(tasks: dict[str, Any], key: str) -> bool:
    value = tasks.pop(key, False)
    if not isinstance(value, bool):  # bool("false") is True: only a real TOML boolean means yes or no
        raise ConfigError(f"[tasks] {key} must be true or false, got {value!r}")
    return value


def _tasks_strings(tasks: dict[str, Any], key: str) -> list[str]:
    value = tasks.pop(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"[tasks] {key} must be a list of non-empty strings, got {value!r}")
    return value


def _tasks_limit(tasks: dict[str, Any], key: str, default: float) -> float | None:
    """A limit that is a positive number, or 0 for none at all (TOML has no null)."""
    value = tasks.pop(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"[tasks] {key} must be a number >= 0 (0: no limit), got {value!r}")
    return value or None


def _tasks_run_as(tasks: dict[str, Any]) -> str | None:
    value = tasks.pop("run_as", None)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"[tasks] run_as must name a user, got {value!r}")
    try:
        import pwd
    except ImportError:  # no Unix users here: nothing to check, and nothing to switch to either
        return value
    try:
        pwd.getpwnam(value)
    except KeyError:
        raise ConfigError(f"[tasks] run_as: no user {value!r} on this machine") from None
    return value


def _tasks_section(tasks: dict[str, Any]) -> tuple[TaskPolicy, int | None]:
    """The [tasks] table -> the policy workers enforce, and the memory limit (None: unlimited)."""
    policy = TaskPolicy(
        allow_command=_tasks_bool(tasks, "allow_command"),
        allow_file_operations=_tasks_bool(tasks, "allow_file_operations"),
        allowed_paths=tuple(str(Path(p).expanduser()) for p in _tasks_strings(tasks, "allowed_paths")),
        allowed_commands=resolve_commands(_tasks_strings(tasks, "allowed_commands")),
        default_timeout_s=_tasks_limit(tasks, "default_timeout_s", DEFAULT_TIMEOUT_S),
        run_as=_tasks_run_as(tasks),
    )
    memory = _tasks_limit(tasks, "memory_limit_mb", DEFAULT_MEMORY_LIMIT_MB)
    if memory is not None and memory != int(memory):
        raise ConfigError(f"[tasks] memory_limit_mb must be a whole number of MiB, got {memory!r}")
    if tasks:
        raise ConfigError(f"[tasks]: unknown key(s) {sorted(tasks)}")
    return policy, None if memory is None else int(memory)


def _labels(value: Any) -> tuple[tuple[str, str], ...]:
    """`[node] labels` (a table or a list of "k=v") or `--label` values -> sorted pairs."""
    if isinstance(value, dict):
        items = [f"{k}={v}" for k, v in value.items()]
    elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        items = list(value)
    else:
        raise ConfigError(f"[node] labels must be a table or a list of KEY=VALUE strings, got {value!r}")
    out: dict[str, str] = {}
    for item in items:
        try:
            key, text = parse_label(item)
        except ValueError as exc:
            raise ConfigError(f"[node] labels: {exc}") from None
        if key in out and out[key] != text:
            raise ConfigError(f"[node] labels: {key!r} given twice ({out[key]!r} and {text!r})")
        out[key] = text
    return tuple(sorted(out.items()))


def _taints(value: Any) -> tuple[Taint, ...]:
    """`[node] taints` or `--taint` values (KEY[=VALUE][:Effect]) -> taints."""
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"[node] taints must be a list of KEY=VALUE:Effect strings, got {value!r}")
    try:
        return tuple(dict.fromkeys(parse_taint(v) for v in value))
    except ValueError as exc:
        raise ConfigError(f"[node] taints: {exc}") from None


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
    for env_key, key in (
        ("SWARM_BROKER", "broker"),
        ("SWARM_CLUSTER", "cluster"),
        ("SWARM_BROKER_USERNAME", "broker_username"),
        ("SWARM_BROKER_PASSWORD", "broker_password"),
        ("SWARM_BROKER_CA", "broker_ca"),
    ):
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
        policy, memory = _tasks_section(tasks)
        if "labels" in node:
            node["labels"] = _labels(node["labels"])
        if "taints" in node:
            node["taints"] = _taints(node["taints"])
        for key in ("data_dir", "broker_ca"):
            if node.get(key) is not None:
                node[key] = Path(node[key]).expanduser()
        known = {f.name for f in dataclasses.fields(NodeConfig)}
        bad = set(node) - known
        if bad:
            raise ConfigError(f"[node]: unknown key(s) {sorted(bad)}")
        config = NodeConfig(core=core, policy=policy, memory_limit_mb=memory, **node)
    except TypeError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    if config.broker is not None:
        parse_broker_url(config.broker)
    if config.api:
        parse_listen(config.api)
    return config


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` -> (host, port); a `ConfigError` naming the value otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"api: expected HOST:PORT (e.g. 127.0.0.1:8470, port 0 for any), got {text!r}")
    return host.strip("[]"), int(port)
