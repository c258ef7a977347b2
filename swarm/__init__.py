"""swarm: one fault-tolerant compute swarm out of the computers people already own.

The Python API: `swarm.step` and `swarm.dag` build workflow definitions (`swarm.workflow.pyapi`), and
`swarm.ApiClient` talks to any node's HTTP API (`swarm.apiclient`). They load on first use, so that a
node or a command that needs neither does not import them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PROTOCOL_VERSION", "ApiClient", "__version__", "dag", "step"]

__version__ = "0.1.0"
PROTOCOL_VERSION = 1

_LAZY = {"dag": "swarm.workflow.pyapi", "step": "swarm.workflow.pyapi", "ApiClient": "swarm.apiclient"}


def __getattr__(name: str) -> Any:
    """`swarm.dag`, `swarm.step` and `swarm.ApiClient`, imported when first used."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'swarm' has no attribute {name!r}")
