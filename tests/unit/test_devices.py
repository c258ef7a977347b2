"""Capability probes, capability validation and device profiles."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest

from swarm.codec import decode
from swarm.devices import probe
from swarm.devices.capabilities import Capabilities
from swarm.devices.probe import (
    LoadSnapshot,
    detect_platform,
    is_termux,
    load_snapshot,
    normalise_arch,
    probe_capabilities,
    refresh_capabilities,
)
from swarm.devices.profiles import BUILTIN_PROFILES, DeviceProfile, load_profiles
from swarm.errors import ConfigError, ProtocolError
from swarm.messages import Heartbeat

TERMUX_PREFIX = "/data/data/com.termux/files/usr"


def _sample() -> Capabilities:
    return Capabilities(
        cores=4,
        memory_mb=3072,
        disk_free_gb=12.5,
        platform="android",
        arch="arm64",
        gpu=False,
        battery_percent=81.0,
        charging=True,
        termux=True,
        role="worker",
        hostname="phone-1",
    )


# --- probes -----------------------------------------------------------------------------------------


def _assert_sane(caps: Capabilities) -> None:
    assert caps.cores >= 1
    assert caps.memory_mb > 0
    assert caps.disk_free_gb >= 0
    assert caps.platform in {"linux", "android", "darwin", "windows", "freebsd"}
    assert caps.arch in {"x86_64", "arm64", "armv7", "armv6", "x86", "riscv64"}
    assert caps.battery_percent is None or 0 <= caps.battery_percent <= 100
    assert caps.hostname


def test_probe_returns_sane_capabilities(tmp_path: Path) -> None:
    caps = probe_capabilities("coordinator", data_dir=tmp_path)
    _assert_sane(caps)
    assert caps.role == "coordinator"
    assert _decode_caps(dataclasses.asdict(caps)) == caps


def test_refresh_updates_only_drifting_fields(tmp_path: Path) -> None:
    stale = dataclasses.replace(_sample(), termux=False, disk_free_gb=0.0, battery_percent=3.0)
    fresh = refresh_capabilities(stale, tmp_path)
    assert fresh.disk_free_gb > 0
    assert fresh.battery_percent == probe_capabilities().battery_percent
    assert (fresh.cores, fresh.platform, fresh.hostname) == (4, "android", "phone-1")
    assert refresh_capabilities(stale, tmp_path, battery=False).battery_percent == 3.0


def test_probe_works_without_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe, "_psutil", None)
    caps = probe_capabilities()
    _assert_sane(caps)
    assert caps.role == "worker"
    snapshot = load_snapshot()
    assert 0.0 <= snapshot.cpu_load <= 1.0
    assert snapshot.memory_free_mb > 0


def test_load_snapshot_is_a_sane_triple(tmp_path: Path) -> None:
    snapshot = load_snapshot(tmp_path)
    assert isinstance(snapshot, LoadSnapshot)
    cpu_load, memory_free_mb, disk_free_mb = snapshot
    assert 0.0 <= cpu_load <= 1.0
    assert 0 < memory_free_mb <= probe_capabilities().memory_mb
    assert isinstance(disk_free_mb, int)
    assert disk_free_mb >= 0


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ("x86_64", "x86_64"),
        ("AMD64", "x86_64"),
        ("aarch64", "arm64"),
        ("arm64", "arm64"),
        ("armv7l", "armv7"),
        ("armv8l", "armv7"),
        ("armv6l", "armv6"),
        ("i686", "x86"),
        ("", "unknown"),
    ],
)
def test_normalise_arch(machine: str, expected: str) -> None:
    assert normalise_arch(machine) == expected


def test_termux_is_detected_as_android() -> None:
    assert is_termux({"PREFIX": TERMUX_PREFIX})
    assert is_termux({"TERMUX_VERSION": "0.118.0"})
    assert not is_termux({"PREFIX": "/usr"})
    assert detect_platform({"PREFIX": TERMUX_PREFIX}) == "android"


def _fake_battery_command(bin_dir: Path, script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = bin_dir / "termux-battery-status"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PREFIX", TERMUX_PREFIX)


def test_termux_battery_is_read_from_termux_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reply = '{"health": "GOOD", "percentage": 64, "plugged": "UNPLUGGED", "status": "DISCHARGING"}'
    _fake_battery_command(tmp_path, f"echo '{reply}'\n", monkeypatch)
    caps = probe_capabilities()
    assert caps.platform == "android"
    assert caps.termux
    assert (caps.battery_percent, caps.charging) == (64.0, False)


def test_hanging_termux_battery_gives_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The helper the script starts holds the output pipe: only killing the session unblocks us.
    _fake_battery_command(tmp_path, "sleep 30\necho '{\"percentage\": 1}'\n", monkeypatch)
    monkeypatch.setattr(probe, "_TERMUX_BATTERY_TIMEOUT_S", 0.2)
    monkeypatch.setattr(probe, "_psutil", None)
    caps = probe_capabilities()
    assert (caps.battery_percent, caps.charging) == (None, None)


# --- capabilities validation --------------------------------------------------------------------------


def _decode_caps(caps: dict[str, Any]) -> Capabilities:
    """Capabilities as a node receives them: inside a heartbeat, through the codec."""
    body = {"name": "n", "caps": caps, "slots": 1, "running": 0, "load": 0.0, "free_memory_mb": 1, "seq": 1}
    raw = {"v": 1, "c": "c", "s": "n", "e": 0, "id": "m", "t": "heartbeat", "b": body}
    env = decode(orjson.dumps(raw))
    assert isinstance(env.body, Heartbeat)
    return env.body.caps


def test_capabilities_accept_int_for_float_and_null_battery() -> None:
    data = {**dataclasses.asdict(_sample()), "disk_free_gb": 12, "battery_percent": None, "charging": None}
    caps = _decode_caps(data)
    assert caps.disk_free_gb == 12.0
    assert isinstance(caps.disk_free_gb, float)
    assert caps.battery_percent is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cores": True}, "caps.cores: expected int, got bool"),
        ({"cores": "4"}, "caps.cores: expected int, got str"),
        ({"cores": 0}, "field 'cores' must be >= 1"),
        ({"memory_mb": 3.5}, "caps.memory_mb: expected int, got float"),
        ({"disk_free_gb": "lots"}, "caps.disk_free_gb: expected number, got str"),
        ({"gpu": 1}, "caps.gpu: expected bool, got int"),
        ({"battery_percent": 101.0}, "field 'battery_percent' must be in [0, 100]"),
        ({"charging": "yes"}, "caps.charging: expected bool, got str"),
        ({"platform": ""}, "field 'platform' must not be empty"),
        ({"hostname": None}, "caps.hostname: expected string, got NoneType"),
        ({"sensors": ["gps"]}, "unknown field(s) ['sensors']"),
    ],
)
def test_bad_capabilities_are_refused_naming_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ProtocolError) as info:
        _decode_caps({**dataclasses.asdict(_sample()), **change})
    assert message in str(info.value)


def test_missing_capability_is_named() -> None:
    data = dataclasses.asdict(_sample())
    del data["arch"]
    with pytest.raises(ProtocolError, match="missing field 'arch'"):
        _decode_caps(data)


# --- device profiles ---------------------------------------------------------------------------------


def test_builtin_profiles() -> None:
    assert set(BUILTIN_PROFILES) == {"phone", "pi", "laptop", "server"}
    assert BUILTIN_PROFILES["laptop"].cpu_speed == 1.0
    assert BUILTIN_PROFILES["phone"].battery
    assert BUILTIN_PROFILES["server"].mean_up_s is None
    for name, profile in BUILTIN_PROFILES.items():
        assert profile.name == name


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profiles.toml"
    path.write_text(text)
    return path


def test_load_profiles_full_and_based(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
[profiles.nas]
cpu_speed = 0.5
cores = 2
memory_mb = 2048
latency_ms = 1
jitter_ms = 0.5
loss = 0
battery = false

[profiles.tablet]
base = "phone"
cpu_speed = 0.6
mean_up_s = 600
mean_down_s = 60

[profiles.slow-tablet]
base = "tablet"
cpu_speed = 0.1
""",
    )
    profiles = load_profiles(path)
    assert list(profiles) == ["nas", "tablet", "slow-tablet"]
    assert profiles["nas"] == DeviceProfile("nas", 0.5, 2, 2048, 1.0, 0.5, 0.0, False)
    assert isinstance(profiles["nas"].latency_ms, float)
    tablet = profiles["tablet"]
    assert tablet == dataclasses.replace(
        BUILTIN_PROFILES["phone"], name="tablet", cpu_speed=0.6, mean_up_s=600.0, mean_down_s=60.0
    )
    assert profiles["slow-tablet"].mean_up_s == 600.0
    assert profiles["slow-tablet"].cpu_speed == 0.1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[profiles.x]\nbase = "phone"\ncores = "many"\n', "profile 'x': field 'cores' must be an integer"),
        ('[profiles.x]\nbase = "phone"\ncores = 2.5\n', "profile 'x': field 'cores' must be an integer"),
        ('[profiles.x]\nbase = "phone"\nbattery = 1\n', "profile 'x': field 'battery' must be true or false"),
        ('[profiles.x]\nbase = "phone"\ncpu_speed = true\n', "field 'cpu_speed' must be a number"),
        ('[profiles.x]\nbase = "phone"\nloss = 1.5\n', r"profile 'x': field 'loss' must be in \[0, 1\]"),
        ('[profiles.x]\nbase = "phone"\njiter_ms = 3\n', "profile 'x': unknown field 'jiter_ms'"),
        ('[profiles.x]\nbase = "watch"\n', "profile 'x': field 'base' must name a known profile"),
        ("[profiles.x]\ncpu_speed = 1.0\n", "profile 'x': missing field 'cores'"),
        (
            '[profiles.x]\nbase = "pi"\nmean_up_s = 60\n',
            "'mean_up_s' and 'mean_down_s' must be given together",
        ),
        ('[profiles.x]\nbase = "pi"\ncpu_speed = 0\n', "field 'cpu_speed' must be > 0"),
        ("[profile.x]\ncores = 1\n", "unknown top-level key 'profile'"),
        ("profiles = 3\n", "'profiles' must be a table"),
        ("[profiles.x\ncores = 1\n", "invalid TOML"),
    ],
)
def test_load_profiles_errors_name_the_field(tmp_path: Path, body: str, message: str) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(ConfigError, match=message) as caught:
        load_profiles(path)
    assert str(path) in str(caught.value)


def test_load_profiles_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read profiles"):
        load_profiles(tmp_path / "absent.toml")
