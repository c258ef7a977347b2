"""Probe what this device is and how busy it is.

Two entry points with different costs. `probe_capabilities` runs once at start-up and may take a
moment (it can ask `termux-battery-status`, which talks to an Android app). `load_snapshot` runs on
every heartbeat, so it only makes a few cheap system calls.

psutil is used when importable and everything has a fallback without it, because old phones under
Termux may have no psutil wheel: cores from the CPU affinity mask or `os.cpu_count`, memory from
`/proc/meminfo` or `sysconf`, disk from `shutil.disk_usage`. A probe that fails degrades to a
conservative value (no battery, no GPU, zero free memory) rather than stopping the node.

Automatic taints (`swarm.devices.capabilities.automatic_taints`: a low battery off the charger, a hot
device) are computed from the battery and the hottest thermal zone (Linux sysfs, one small read per
zone) at start-up and again on every battery reading, keeping the owner's own taints as they are.

The isolation a node gives its tasks is the executor's to know (`swarm.runtime.executor_proc`); the
probe asks the same detection the executor runs when it starts, unless the caller passes the level the
executor reported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import glob
import json
import os
import platform as _platform
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

from swarm.devices.capabilities import AUTO_TAINT_PREFIX, Capabilities, Taint, automatic_taints
from swarm.taskapi import TaskPolicy

try:
    import psutil as _psutil
except ImportError:  # pragma: no cover - exercised on devices without psutil
    _psutil = None  # type: ignore[assignment]

__all__ = [
    "LoadSnapshot",
    "detect_platform",
    "is_termux",
    "java_executable",
    "load_snapshot",
    "normalise_arch",
    "probe_capabilities",
    "probe_runtimes",
    "refresh_capabilities",
    "temperature_c",
]

_MIB = 1024 * 1024
_GIB = 1024 * 1024 * 1024
# termux-battery-status blocks forever when the Termux:API app is missing; never wait long for it.
_TERMUX_BATTERY_TIMEOUT_S = 3.0

_ARCH_ALIASES = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "x64": "x86_64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "aarch64_be": "arm64",
    "armv8l": "armv7",  # a 32-bit userland on a 64-bit core runs armv7 code
    "armv7l": "armv7",
    "armv7": "armv7",
    "armv7a": "armv7",
    "armv6l": "armv6",
    "armv6": "armv6",
    "i386": "x86",
    "i486": "x86",
    "i586": "x86",
    "i686": "x86",
    "x86": "x86",
    "riscv64": "riscv64",
}


class LoadSnapshot(NamedTuple):
    """How busy the device is right now, sent with each heartbeat for placement scoring."""

    cpu_load: float
    """Recent CPU demand as a fraction of this device's cores, clamped to 0..1."""
    memory_free_mb: float
    """Memory available to new work, in MiB."""
    disk_free_mb: int
    """Free space where the node keeps its data, in MiB."""


def probe_capabilities(
    role: str = "worker",
    *,
    data_dir: Path | None = None,
    isolation: str | None = None,
    labels: tuple[tuple[str, str], ...] = (),
    taints: tuple[Taint, ...] = (),
) -> Capabilities:
    """Probe this device once, for the capabilities its heartbeats announce.

    `data_dir` is where the node stores task data; its file system is the one whose free space
    matters (the home directory when not given). `isolation` is the level the executor gives tasks;
    None detects it (one short bubblewrap start, see `detect_isolation`). `labels` and `taints` are the
    owner's (`swarm join --label/--taint`); the automatic taints are added to them.
    """
    env = os.environ
    termux = is_termux(env)
    plat = detect_platform(env)
    arch = normalise_arch(_platform.machine())
    battery_percent, charging = _battery(termux)
    return Capabilities(
        cores=_cores(),
        memory_mb=_memory_total_bytes() // _MIB,
        disk_free_gb=round(_disk_free_bytes(data_dir) / _GIB, 2),
        platform=plat,
        arch=arch,
        gpu=_has_gpu(plat, arch),
        battery_percent=battery_percent,
        charging=charging,
        termux=termux,
        role=role,
        hostname=socket.gethostname(),
        isolation=isolation if isolation is not None else _isolation(),
        labels=tuple(sorted(dict(labels).items())),
        taints=_with_automatic(taints, battery_percent, charging),
    )


def _with_automatic(
    taints: tuple[Taint, ...], battery_percent: float | None, charging: bool | None
) -> tuple[Taint, ...]:
    own = tuple(t for t in taints if not t.key.startswith(AUTO_TAINT_PREFIX))
    return own + automatic_taints(battery_percent, charging, temperature_c())


def temperature_c(root: Path = Path("/sys/class/thermal")) -> float | None:
    """The hottest thermal zone in degrees Celsius (Linux sysfs), or None where none is readable."""
    hottest: float | None = None
    for zone in sorted(root.glob("thermal_zone*/temp")):
        with contextlib.suppress(OSError, ValueError):
            # The kernel reports millidegrees; some zones (absent sensors) read negative or fail.
            value = int(zone.read_text().strip()) / 1000.0
            if 0.0 < value < 200.0 and (hottest is None or value > hottest):
                hottest = value
    return hottest


def java_executable() -> str | None:
    """The `java` a JVM step would run (from the system's directories, never a task's PATH), or None."""
    return shutil.which("java", path="/usr/bin:/bin:/usr/local/bin")


def probe_runtimes(task_types: Iterable[str], policy: TaskPolicy) -> tuple[str, ...]:
    """The workflow runtimes this node offers: those whose task plugin it has and can run here.

    SWARM (built-in task types) always; PYTHON and MAPREDUCE with their plugins (MAPREDUCE's three
    `step.mapreduce.*`); JVM with a `java`; SHELL only where the owner allows commands and lists `sh`
    among them (a shell step is a command).
    """
    types = set(task_types)
    offered = ["SWARM"]
    if "step.python" in types:
        offered.append("PYTHON")
    if {"step.mapreduce.map", "step.mapreduce.reduce", "step.mapreduce.collect"} <= types:
        offered.append("MAPREDUCE")
    if "step.jvm" in types and java_executable():
        offered.append("JVM")
    shells = {os.path.basename(c) for c in policy.allowed_commands}
    if "step.shell" in types and policy.allow_command and "sh" in shells:
        offered.append("SHELL")
    return tuple(sorted(offered))


def refresh_capabilities(
    caps: Capabilities, data_dir: Path | None = None, *, battery: bool = True
) -> Capabilities:
    """Update the fields of `caps` that drift (free disk, battery) without probing everything again.

    The disk part is one statvfs. The battery part is cheap through psutil, but under Termux it runs
    `termux-battery-status`, a subprocess that can take a second or, at worst, the timeout: call this
    off the event loop and every minute or so, not on every heartbeat (`battery=False` skips it).
    """
    disk_free_gb = round(_disk_free_bytes(data_dir) / _GIB, 2)
    if not battery:
        return dataclasses.replace(caps, disk_free_gb=disk_free_gb)
    battery_percent, charging = _battery(caps.termux)
    return dataclasses.replace(
        caps,
        disk_free_gb=disk_free_gb,
        battery_percent=battery_percent,
        charging=charging,
        taints=_with_automatic(caps.taints, battery_percent, charging),
    )


def load_snapshot(data_dir: Path | None = None) -> LoadSnapshot:
    """Measure current load cheaply: one loadavg read, one memory read, one statvfs."""
    return LoadSnapshot(
        cpu_load=_cpu_load(),
        memory_free_mb=round(_memory_available_bytes() / _MIB, 1),
        disk_free_mb=_disk_free_bytes(data_dir) // _MIB,
    )


def _isolation() -> str:
    from swarm.runtime.executor_proc import detect_isolation  # the executor's rule, not a copy of it

    return detect_isolation()


def is_termux(env: Mapping[str, str] | None = None) -> bool:
    """Tell whether we run inside Termux, whose Linux is really Android with its own tools."""
    env = os.environ if env is None else env
    return "com.termux" in env.get("PREFIX", "") or "TERMUX_VERSION" in env


def detect_platform(env: Mapping[str, str] | None = None) -> str:
    """Name the OS family: linux, android, darwin, windows, freebsd, or Python's own name for others.

    Termux reports `sys.platform == "linux"`, but placement must tell phones from servers, so it is
    reported as android.
    """
    if is_termux(env) or hasattr(sys, "getandroidapilevel"):
        return "android"
    name = sys.platform
    if name.startswith("linux"):
        return "linux"
    if name in ("win32", "cygwin"):
        return "windows"
    if name.startswith("freebsd"):
        return "freebsd"
    return name


def normalise_arch(machine: str) -> str:
    """Map the many spellings of a CPU architecture to one name, so requirements compare equal."""
    key = machine.strip().lower()
    if key in _ARCH_ALIASES:
        return _ARCH_ALIASES[key]
    if key.startswith("armv7"):
        return "armv7"
    if key.startswith("armv8") or key.startswith("arm64"):
        return "arm64"
    return key or "unknown"


@functools.cache
def _cores() -> int:
    """Cores this process may use: the affinity mask matters in containers and under taskset."""
    if hasattr(os, "sched_getaffinity"):
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except OSError:
            pass
    if _psutil is not None:
        count = _psutil.cpu_count(logical=True)
        if count:
            return count
    return os.cpu_count() or 1


def _cpu_load() -> float:
    """One-minute load average divided by cores; psutil's cpu_percent where there is no loadavg."""
    try:
        load = os.getloadavg()[0] / _cores()
    except (AttributeError, OSError):
        if _psutil is None:
            return 0.0
        try:
            load = _psutil.cpu_percent(interval=None) / 100.0
        except (OSError, RuntimeError):  # Android forbids /proc/stat to apps since version 8
            return 0.0
    return min(1.0, max(0.0, load))


def _read_meminfo() -> dict[str, int]:
    """Parse /proc/meminfo into bytes per key; empty where there is no /proc."""
    result: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as lines:
            for line in lines:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    scale = 1024 if parts[1:] == ["kB"] else 1
                    result[key] = int(parts[0]) * scale
    except OSError:
        pass
    return result


def _memory_total_bytes() -> int:
    if _psutil is not None:
        try:
            return int(_psutil.virtual_memory().total)
        except (OSError, RuntimeError):
            pass
    total = _read_meminfo().get("MemTotal")
    if total is not None:
        return total
    return _sysconf_pages("SC_PHYS_PAGES")


def _memory_available_bytes() -> int:
    if _psutil is not None:
        try:
            return int(_psutil.virtual_memory().available)
        except (OSError, RuntimeError):
            pass
    info = _read_meminfo()
    if "MemAvailable" in info:
        return info["MemAvailable"]
    if "MemFree" in info:  # kernels before 3.14 have no MemAvailable
        return info["MemFree"] + info.get("Cached", 0) + info.get("Buffers", 0)
    return _sysconf_pages("SC_AVPHYS_PAGES")


def _sysconf_pages(name: str) -> int:
    try:
        return os.sysconf(name) * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 0


def _disk_free_bytes(data_dir: Path | None) -> int:
    path = data_dir if data_dir is not None else Path.home()
    try:
        return shutil.disk_usage(path).free
    except OSError:
        try:
            return shutil.disk_usage(os.getcwd()).free
        except OSError:
            return 0


def _battery(termux: bool) -> tuple[float | None, bool | None]:
    """Battery charge and whether on external power; (None, None) without a readable battery."""
    if termux and shutil.which("termux-battery-status"):
        reading = _termux_battery()
        if reading[0] is not None:
            return reading
    if _psutil is None or not hasattr(_psutil, "sensors_battery"):
        return None, None
    try:
        battery = _psutil.sensors_battery()
    except (OSError, RuntimeError, NotImplementedError, ValueError):
        return None, None
    if battery is None:
        return None, None
    percent = min(100.0, max(0.0, float(battery.percent)))
    return percent, battery.power_plugged


def _termux_battery() -> tuple[float | None, bool | None]:
    """Ask Termux:API for the battery state (JSON such as {"percentage": 80, "plugged": "UNPLUGGED"}).

    The command runs in its own session and the whole session is killed on timeout: it is a script
    whose helper process would otherwise keep the output pipe open and block us after the script dies.
    """
    try:
        with subprocess.Popen(
            ["termux-battery-status"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        ) as proc:
            try:
                output, _ = proc.communicate(timeout=_TERMUX_BATTERY_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _kill_session(proc.pid)
                proc.communicate()
                return None, None
        data = json.loads(output)
        percent = float(data["percentage"])
        plugged = data.get("plugged")
        status = data.get("status")
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError, AttributeError):
        return None, None
    if isinstance(plugged, str):
        charging: bool | None = plugged.upper() != "UNPLUGGED"
    elif isinstance(status, str):
        charging = status.upper() in ("CHARGING", "FULL")
    else:
        charging = None
    return min(100.0, max(0.0, percent)), charging


def _kill_session(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (OSError, AttributeError):  # already gone, or no process groups (Windows)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _has_gpu(plat: str, arch: str) -> bool:
    """A usable GPU: NVIDIA's tools or device node, a DRM render node, or Apple silicon."""
    if shutil.which("nvidia-smi") or os.path.exists("/dev/nvidia0"):
        return True
    if glob.glob("/dev/dri/renderD*"):
        return True
    return plat == "darwin" and arch == "arm64"
