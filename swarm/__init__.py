"""swarm: one fault-tolerant compute swarm out of the computers people already own.

The Python API: `swarm.Client` (and `AsyncClient`) submits tasks and MapReduce jobs and returns futures
(`swarm.client`); `swarm.step` and `swarm.dag` build workflow definitions (`swarm.workflow.pyapi`), and
`swarm.ApiClient` talks to any node's HTTP API (`swarm.apiclient`). They load on first use, so that a
node or a command that needs none of them does not import them.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "PROTOCOL_VERSION",
    "ApiClient",
    "AsyncClient",
    "Client",
    "TaskFailed",
    "__version__",
    "dag",
    "step",
]

__version__ = "0.1.0"
PROTOCOL_VERSION = 1

_LAZY = {
    "dag": "swarm.workflow.pyapi",
    "step": "swarm.workflow.pyapi",
    "ApiClient": "swarm.apiclient",
    "Client": "swarm.client",
    "AsyncClient": "swarm.client",
    "TaskFailed": "swarm.client",
}


def __getattr__(name: str) -> Any:
    """The names of the Python API, imported when first used."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'swarm' has no attribute {name!r}")
