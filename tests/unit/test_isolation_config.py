"""The isolation settings as data: the [tasks] table, the levels, requirements and placement on them."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tomllib
from pathlib import Path

import pytest

from swarm.config import NodeConfig, load_config
from swarm.core.config import PlacementWeights
from swarm.core.placement import Candidate, choose, unmet, unmet_by_all
from swarm.devices.capabilities import ISOLATION_LEVELS, Capabilities, isolation_rank, meets_isolation
from swarm.devices.profiles import simulated_capabilities
from swarm.errors import ConfigError, InvalidSpec
from swarm.jobspec import parse_requirements, task_spec
from swarm.messages import Heartbeat, Requirements
from swarm.taskapi import DEFAULT_MEMORY_LIMIT_MB, DEFAULT_TIMEOUT_S, TaskPolicy


def config(tmp_path: Path, tasks: str) -> NodeConfig:
    path = tmp_path / "config.toml"
    path.write_text(f"[tasks]\n{tasks}\n")
    return load_config(path)


# -- [tasks] ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["allow_command", "allow_file_operations"])
@pytest.mark.parametrize("value", ['"false"', '"true"', "0", "1", '"no"', "[]"])
def test_switches_take_only_real_booleans(tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        config(tmp_path, f"{key} = {value}")
    message = str(info.value)
    assert key in message and "true or false" in message
    assert repr(tomllib.loads(f"v = {value}")["v"]) in message  # names the value it got


def test_switches_and_their_defaults(tmp_path: Path) -> None:
    on = config(tmp_path, "allow_command = true\nallow_file_operations = true")
    assert on.policy.allow_command and on.policy.allow_file_operations
    off = config(tmp_path, "")
    assert not off.policy.allow_command and not off.policy.allow_file_operations
    assert off.policy.allowed_commands == () and off.policy.run_as is None
    assert off.policy.default_timeout_s == DEFAULT_TIMEOUT_S
    assert off.memory_limit_mb == DEFAULT_MEMORY_LIMIT_MB == NodeConfig().memory_limit_mb == 1024


def test_allowed_commands_are_resolved_when_the_config_is_loaded(tmp_path: Path) -> None:
    ls = shutil.which("ls")
    assert ls is not None
    loaded = config(tmp_path, f'allowed_commands = ["{ls}", "ls"]')
    assert loaded.policy.allowed_commands == (ls, os.path.abspath(ls))


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('allowed_commands = ["no-such-program-here"]', "'no-such-program-here' is not an executable file"),
        ('allowed_commands = ["/no/such/program"]', "'/no/such/program' is not an executable file"),
        ('allowed_commands = ["bin/ls"]', "absolute path or a bare name"),
        ('allowed_commands = "ls"', "allowed_commands must be a list"),
        ("allowed_paths = [1]", "allowed_paths must be a list"),
        ("default_timeout_s = -1", "default_timeout_s must be a number >= 0"),
        ('default_timeout_s = "300"', "default_timeout_s must be a number"),
        ("memory_limit_mb = true", "memory_limit_mb must be a number"),
        ("memory_limit_mb = 1.5", "whole number"),
        ('run_as = "no-such-user-here"', "no user 'no-such-user-here'"),
        ('run_as = ""', "run_as must name a user"),
        ("sandbox = false", "unknown key(s) ['sandbox']"),
    ],
)
def test_bad_task_settings_are_refused_clearly(tmp_path: Path, line: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        config(tmp_path, line)
    assert needle in str(info.value)


def test_limits_and_the_task_user(tmp_path: Path) -> None:
    loaded = config(tmp_path, 'default_timeout_s = 60\nmemory_limit_mb = 256\nrun_as = "nobody"')
    assert loaded.policy.default_timeout_s == 60 and loaded.memory_limit_mb == 256
    assert loaded.policy.run_as == "nobody"
    unlimited = config(tmp_path, "default_timeout_s = 0\nmemory_limit_mb = 0")
    assert unlimited.policy.default_timeout_s is None and unlimited.memory_limit_mb is None


def test_a_policy_takes_only_absolute_commands() -> None:
    with pytest.raises(ValueError, match="absolute"):
        TaskPolicy(allowed_commands=("ls",))
    with pytest.raises(ValueError, match="positive"):
        TaskPolicy(default_timeout_s=0)


# -- levels, requirements, placement -------------------------------------------------------------------------
def test_levels_are_ordered_weakest_first() -> None:
    assert ISOLATION_LEVELS == ("process", "user", "sandbox")
    assert [isolation_rank(level) for level in ISOLATION_LEVELS] == [0, 1, 2]
    assert meets_isolation("sandbox", "user") and meets_isolation("user", "user")
    assert not meets_isolation("process", "user")
    with pytest.raises(ValueError, match="weakest to strongest: process, user, sandbox"):
        isolation_rank("vm")


def caps(isolation: str = "process") -> Capabilities:
    return simulated_capabilities("h", cores=8, memory_mb=16384, disk_free_gb=100.0, isolation=isolation)


def test_capabilities_carry_a_known_level() -> None:
    assert dataclasses.replace(caps(), isolation="sandbox").isolation == "sandbox"
    assert simulated_capabilities("h", cores=8, memory_mb=1, disk_free_gb=1.0).isolation == "process"
    with pytest.raises(ValueError, match="isolation"):
        caps("chroot")


def test_requirements_parse_and_validate_isolation_and_network() -> None:
    req = parse_requirements(["isolation=sandbox", "network=true"])
    assert req == Requirements(isolation="sandbox", network=True)
    assert parse_requirements({"isolation": "user", "network": False}) == Requirements(isolation="user")
    assert Requirements().isolation is None and not Requirements().network
    with pytest.raises(InvalidSpec, match=r"unknown level 'jail'.*process, user, sandbox"):
        parse_requirements(["isolation=jail"])
    with pytest.raises(InvalidSpec, match="network: expected bool"):
        parse_requirements(["network=maybe"])
    with pytest.raises(ValueError, match="unknown isolation level"):
        Requirements(isolation="jail")
    spec = task_spec("j.t", {"type": "echo", "require": {"isolation": "sandbox"}}, {})
    assert spec.requirements.isolation == "sandbox"


def heartbeat(isolation: str) -> Heartbeat:
    return Heartbeat(
        f"node-{isolation}", caps(isolation), slots=4, running=0, load=0.0, free_memory_mb=8000, seq=1
    )


def test_placement_filters_on_the_isolation_a_node_gives() -> None:
    members = {level: Candidate(f"n-{level}", heartbeat(level), limit=4) for level in ISOLATION_LEVELS}
    want_user = Requirements(isolation="user")
    assert unmet(want_user, "n-process", members["process"].heartbeat) == "isolation=user"
    assert unmet(want_user, "n-user", members["user"].heartbeat) is None
    assert unmet(want_user, "n-sandbox", members["sandbox"].heartbeat) is None
    want_sandbox = Requirements(isolation="sandbox")
    chosen = choose(want_sandbox, list(members.values()), PlacementWeights())
    assert chosen is not None and chosen.node_id == "n-sandbox"
    weak = [members["process"], members["user"]]
    assert unmet_by_all(want_sandbox, weak) == "no member satisfies isolation=sandbox (2 live)"
    assert choose(Requirements(network=True), weak, PlacementWeights()) is not None  # every node has network
