"""The `system_info` task: facts about the device that ran it.

Useful to see what a swarm is made of (`swarm submit task system_info` lands on some node and says which)
and to check placement: the answer comes from the machine that ran the task, not from the submitter.
psutil gives portable memory figures; without it (some phones) the POSIX `sysconf` values are used.
"""

from __future__ import annotations

import os
import platform
import socket
from typing import Any

from swarm import __version__
from swarm.errors import InvalidPayload
from swarm.taskapi import TaskContext

__all__ = ["SystemInfoHandler", "collect", "handler"]


def _memory() -> tuple[int | None, int | None]:
    """Total and available memory in bytes, or None where the platform does not say."""
    try:
        import psutil

        vm = psutil.virtual_memory()
        return int(vm.total), int(vm.available)
    except Exception:  # psutil missing or unsupported here: fall back to sysconf
        pass
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None, None


def _physical_cores() -> int | None:
    try:
        import psutil

        return psutil.cpu_count(logical=False)
    except Exception:  # psutil missing or unsupported here
        return None


def collect() -> dict[str, Any]:
    """Gather the facts; kept separate from the handler so capability probes can reuse it."""
    total, available = _memory()
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "system": platform.system(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "cores": os.cpu_count(),
        "cores_physical": _physical_cores(),
        "memory": total,
        "memory_available": available,
    }


class SystemInfoHandler:
    """Any JSON object (usually `{}`) -> a dict of platform facts about the running device."""

    name = "system_info"
    version = __version__

    def validate(self, payload: dict[str, Any]) -> None:
        """The payload carries no parameters; it only has to be a JSON object."""
        if not isinstance(payload, dict):
            raise InvalidPayload("system_info: payload must be a JSON object")

    def run(self, ctx: TaskContext, payload: dict[str, Any]) -> Any:
        """Report the facts plus which node ran it, so a reply can be matched to a device."""
        return {"node_id": ctx.node_id, **collect()}


handler = SystemInfoHandler()
